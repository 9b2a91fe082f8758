package state

import (
	"fmt"
	"os"
	"time"
)

// SetAside renames a file that could not be loaded to PATH.corrupt-<unix
// time>, keeping it for inspection, so that the next write does not
// destroy it and the next start does not trip over it again. It returns
// the new name. The state file and pimqtt's message store both use it.
func SetAside(path string) (string, error) {
	aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().Unix())
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	return aside, nil
}
