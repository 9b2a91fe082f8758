package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/pimqtt/pimqtt/auth"
)

// runPasswd is `pimqtt passwd`, which writes the lines mosquitto_passwd 2.0
// writes.
func runPasswd(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("pimqtt passwd", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	create := fs.BoolP("create", "c", false, "create a new password file, overwriting an existing one")
	batch := fs.BoolP("batch", "b", false, "take the password from the command line")
	del := fs.BoolP("delete", "D", false, "delete the user from the file")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pimqtt passwd [-c] [-b] [-D] FILE USER [PASSWORD]\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	want := 2
	if *batch {
		want = 3
	}
	if len(rest) != want || (*del && (*batch || *create)) {
		fs.Usage()
		return 2
	}
	path, user := rest[0], rest[1]
	if err := auth.ValidateUsername(user); err != nil && !*del {
		fmt.Fprintln(stderr, "pimqtt passwd:", err)
		return 1
	}
	if !*del {
		// Before the prompts: a wrong path should not cost two passwords.
		if err := auth.CheckPasswordFile(path, *create); err != nil {
			fmt.Fprintln(stderr, "pimqtt passwd:", err)
			return 1
		}
	}
	var err error
	switch {
	case *del:
		err = auth.DeleteUser(path, user)
	default:
		var password string
		if *batch {
			password = rest[2]
		} else if password, err = auth.ReadPasswordTwice(stdin, stdout); err != nil {
			break
		}
		err = auth.SetPassword(path, user, password, *create)
	}
	if err != nil {
		fmt.Fprintln(stderr, "pimqtt passwd:", err)
		return 1
	}
	return 0
}
