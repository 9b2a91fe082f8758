package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/pimqtt/pimqtt/auth"
)

const passwdUsage = `Usage: pimqtt passwd [-H sha512-pbkdf2 | -H sha512] [-I ITERATIONS] [-c | -D] FILE USER
       pimqtt passwd [-H sha512-pbkdf2 | -H sha512] [-I ITERATIONS] [-c] -b FILE USER PASSWORD
       pimqtt passwd [-H sha512-pbkdf2 | -H sha512] [-I ITERATIONS] -U FILE
Writes mosquitto password files, as mosquitto_passwd does. Options come
before FILE, so a user name or password may begin with '-'. The file is
replaced atomically and gets mode 0600.
`

// passwdCmd is what the command line of `pimqtt passwd` asks for.
type passwdCmd struct {
	create, batch, del, update bool
	hash                       auth.HashOptions
	path, user, password       string
}

// runPasswd is `pimqtt passwd`, mosquitto_passwd's flags and refusals
// (measured against mosquitto_passwd 2.0.11, see passwd_test.go) with a
// few more refusals where mosquitto_passwd silently ignores what it was
// asked for.
func runPasswd(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	cmd, code := parsePasswd(args, stderr)
	if code >= 0 {
		return code
	}
	// mosquitto_passwd checks the user name in every mode, -D included.
	if !cmd.update {
		if err := auth.ValidateUsername(cmd.user); err != nil {
			fmt.Fprintln(stderr, "pimqtt passwd:", err)
			return 1
		}
	}
	before, statErr := auth.FileExposure(cmd.path)
	wrote, err := cmd.run(stdin, stdout)
	if statErr == nil && before.Exposed() {
		warnExposure(stderr, cmd.path, before, wrote)
	}
	if err != nil {
		fmt.Fprintln(stderr, "pimqtt passwd:", err)
		return 1
	}
	return 0
}

// parsePasswd reads the command line. A code of 0 or more means stop
// with that exit code (help, or a refusal already explained on stderr).
func parsePasswd(args []string, stderr io.Writer) (passwdCmd, int) {
	var c passwdCmd
	fs := pflag.NewFlagSet("pimqtt passwd", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	// mosquitto_passwd stops at the first argument that is not an
	// option; so do we, or `-b FILE bob -secret` would fail.
	fs.SetInterspersed(false)
	fs.BoolVarP(&c.create, "create", "c", false, "create a new password file, overwriting an existing one")
	fs.BoolVarP(&c.batch, "batch", "b", false, "take the password from the command line (it shows in ps and the shell history)")
	fs.BoolVarP(&c.del, "delete", "D", false, "delete the user from the file")
	fs.BoolVarP(&c.update, "update", "U", false, "hash the plaintext passwords of a user:password file in place; lines already hashed are left as they are")
	hashName := fs.StringP("hash", "H", auth.PBKDF2.String(), "the `HASH`: sha512-pbkdf2, or sha512 (for mosquitto 1.6 and older; far weaker)")
	iterations := fs.StringP("iterations", "I", "", fmt.Sprintf("the `ITERATIONS` of sha512-pbkdf2 (default %d, at most %d)", auth.DefaultIterations, auth.MaxIterations))
	fs.Usage = func() { fmt.Fprintf(stderr, "%s\n%s", passwdUsage, fs.FlagUsages()) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return c, 0
		}
		fmt.Fprintln(stderr, "pimqtt passwd:", err)
		fs.Usage()
		return c, 2
	}
	refuse := func(format string, a ...any) (passwdCmd, int) {
		fmt.Fprintf(stderr, "pimqtt passwd: "+format+"\n", a...)
		return c, 2
	}
	// mosquitto_passwd's refusals, in its order and words.
	switch {
	case c.create && c.del:
		return refuse("-c and -D cannot be used together")
	case c.create && c.update:
		return refuse("-c and -U cannot be used together")
	case c.del && c.update:
		return refuse("-D and -U cannot be used together")
	case c.del && c.batch:
		return refuse("-b and -D cannot be used together")
	// mosquitto_passwd 2.0.11 accepts these and ignores -b or -I.
	case c.update && c.batch:
		return refuse("-b and -U cannot be used together: -U takes the passwords from the file")
	}
	alg, err := auth.ParseAlgorithm(*hashName)
	if err != nil {
		return refuse("-H: %v", err)
	}
	c.hash.Algorithm = alg
	if fs.Changed("iterations") {
		n, err := strconv.Atoi(*iterations)
		switch {
		case err != nil || n < 1:
			return refuse("-I %q: the number of iterations must be a whole number > 0", *iterations)
		case n > auth.MaxIterations:
			return refuse("-I %d: at most %d iterations (every login costs them; pimqtt refuses files with more)", n, auth.MaxIterations)
		case alg != auth.PBKDF2:
			return refuse("-I applies to -H sha512-pbkdf2 only: -H %s has no iterations", alg)
		}
		c.hash.Iterations = n
	}

	rest := fs.Args()
	want, what := 2, "FILE USER"
	switch {
	case c.update:
		want, what = 1, "FILE"
	case c.batch:
		want, what = 3, "FILE USER PASSWORD"
	}
	if len(rest) != want {
		fmt.Fprintf(stderr, "pimqtt passwd: want %s, got %d argument(s)\n", what, len(rest))
		fs.Usage()
		return c, 2
	}
	c.path = rest[0]
	if want > 1 {
		c.user = rest[1]
	}
	if want > 2 {
		c.password = rest[2]
	}
	return c, -1
}

// run does what c asks and reports whether the file was written.
func (c passwdCmd) run(stdin *os.File, stdout io.Writer) (bool, error) {
	switch {
	case c.del:
		if err := auth.DeleteUser(c.path, c.user); err != nil {
			return false, err
		}
		return true, nil
	case c.update:
		res, err := auth.HashPlaintext(c.path, c.hash)
		if err != nil {
			return false, err
		}
		fmt.Fprintf(stdout, "pimqtt passwd: %s: %d password(s) hashed, %d line(s) already hashed left as they were\n",
			c.path, res.Hashed, res.Kept)
		return res.Hashed > 0, nil
	}
	password := c.password
	if !c.batch {
		// Before the prompts: a wrong path should not cost two passwords.
		if err := auth.CheckPasswordFile(c.path, c.create); err != nil {
			return false, err
		}
		var err error
		if password, err = auth.ReadPasswordTwice(stdin, stdout); err != nil {
			return false, err
		}
	}
	if err := auth.SetPasswordWith(c.path, c.user, password, c.create, c.hash); err != nil {
		return false, err
	}
	return true, nil
}

// warnExposure says that the password file was open to others, and what
// pimqtt passwd did about it. mosquitto 2.0.16+ warns only about "other"
// bits; the group matters here too, because the rewrite to 0600 takes the
// group's access away, and a broker reading the file through its group
// (root:mosquitto 0640) can no longer.
func warnExposure(stderr io.Writer, path string, e auth.Exposure, wrote bool) {
	if !wrote {
		fmt.Fprintf(stderr, "pimqtt passwd: warning: %s is open to %s (mode %04o), who can copy the hashes and guess passwords offline; chmod 0600 %s\n",
			path, e.Who(), uint32(e.Mode), path)
		return
	}
	fmt.Fprintf(stderr, "pimqtt passwd: warning: %s was open to %s (mode %04o); it is now 0600, readable by its owner only. "+
		"A broker that runs as another user needs it back: chown THAT-USER %s\n", path, e.Who(), uint32(e.Mode), path)
}
