//go:build !unix

package auth

import (
	"io/fs"
	"os"
)

// copyOwner is a no-op where files have no Unix owner.
func copyOwner(*os.File, fs.FileInfo) error { return nil }

// syncDir is a no-op where directories cannot be opened for fsync
// (Windows); the rename itself is still atomic there.
func syncDir(string) error { return nil }
