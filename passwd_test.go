package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pimqtt/pimqtt/auth"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// passwdRun is one run of a passwd tool: its exit code and output.
type passwdRun struct {
	code           int
	stdout, stderr string
}

// passwdTool runs `pimqtt passwd` or mosquitto_passwd with args, feeding
// stdin to its prompts.
type passwdTool struct {
	name string
	run  func(t *testing.T, stdin string, args ...string) passwdRun
}

// pimqttPasswd runs `pimqtt passwd` in this process. Its stdin is a pipe,
// as when a script feeds the prompts.
func pimqttPasswd(t *testing.T, stdin string, args ...string) passwdRun {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// A few bytes: the pipe's buffer holds them, so no goroutine is needed.
	if _, err := w.WriteString(stdin); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var stdout, stderr bytes.Buffer
	code := runPasswd(args, r, &stdout, &stderr)
	return passwdRun{code, stdout.String(), stderr.String()}
}

// mosquittoPasswd runs Debian's mosquitto_passwd 2.0.11.
func mosquittoPasswd(t *testing.T, stdin string, args ...string) passwdRun {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_passwd", "mosquitto")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return passwdRun{ee.ExitCode(), stdout.String(), stderr.String()}
	case err != nil:
		t.Fatalf("mosquitto_passwd %q: %v", args, err)
	}
	return passwdRun{0, stdout.String(), stderr.String()}
}

var (
	toolPimqtt    = passwdTool{"pimqtt passwd", pimqttPasswd}
	toolMosquitto = passwdTool{"mosquitto_passwd", mosquittoPasswd}
)

// TestPasswdRefusals runs each command line through both tools, on a copy
// of the same file: what mosquitto_passwd 2.0.11 refuses, pimqtt passwd
// refuses too, with a message naming the problem, before any prompt and
// without touching the file. The rows where only pimqtt refuses are where
// mosquitto_passwd silently ignores what it was asked for or writes a line
// that can never log in; they say so (mosquitto: accepts), measured here
// on every run.
func TestPasswdRefusals(t *testing.T) {
	const file = "FILE"
	tests := []struct {
		name      string
		args      []string
		want      string // in pimqtt's stderr
		mosquitto bool   // mosquitto_passwd refuses too
	}{
		// mosquitto_passwd's own refusals.
		{"-c with -D", []string{"-c", "-D", file, "alice"}, "-c and -D cannot be used together", true},
		{"-c with -U", []string{"-c", "-U", file}, "-c and -U cannot be used together", true},
		{"-D with -U", []string{"-D", "-U", file}, "-D and -U cannot be used together", true},
		{"-b with -D", []string{"-b", "-D", file, "alice", "pw"}, "-b and -D cannot be used together", true},
		{"unknown hash", []string{"-H", "md5", "-b", file, "bob", "pw"}, `unknown hash type "md5"`, true},
		{"hash names are case-sensitive", []string{"-H", "SHA512", "-b", file, "bob", "pw"}, `unknown hash type "SHA512"`, true},
		{"-H without a value", []string{"-H"}, "needs an argument", true},
		{"-I without a value", []string{"-I"}, "needs an argument", true},
		{"-I 0", []string{"-I", "0", "-b", file, "bob", "pw"}, "must be a whole number > 0", true},
		{"-I negative", []string{"-I", "-5", "-b", file, "bob", "pw"}, "must be a whole number > 0", true},
		{"-I not a number", []string{"-I", "many", "-b", file, "bob", "pw"}, "must be a whole number > 0", true},
		{"':' in the user name", []string{"-b", file, "a:b", "pw"}, "must not contain ':'", true},
		{"tab in the user name", []string{"-b", file, "a\tb", "pw"}, "control characters", true},
		{"DEL in the user name", []string{"-b", file, "a\x7fb", "pw"}, "control characters", true},
		{"control character, -D", []string{"-D", file, "a\x01b"}, "control characters", true},
		{"user too long", []string{"-b", file, strings.Repeat("u", 65536), "pw"}, "longer than 65535 bytes", true},
		{"-b without the password", []string{"-b", file, "bob"}, "want FILE USER PASSWORD", true},
		{"no user", []string{file}, "want FILE USER", true},
		{"nothing", nil, "want FILE USER", true},
		{"-U with a user", []string{"-U", file, "alice"}, "want FILE, got 2", true},
		{"-D of a user not in the file", []string{"-D", file, "nobody"}, "user not found", true},
		{"-b on a missing file", []string{"-b", file + ".missing", "bob", "pw"}, "use -c to create it", true},
		{"-D on a missing file", []string{"-D", file + ".missing", "alice"}, "no such file", true},
		{"-U on a missing file", []string{"-U", file + ".missing"}, "no such file", true},
		{"passwords differ", []string{file, "bob"}, "passwords do not match", true},
		{"unknown option", []string{"-x", "-b", file, "bob", "pw"}, "unknown shorthand flag: 'x'", true},

		// Only pimqtt refuses: mosquitto_passwd accepts and ignores -b or -I,
		// or writes what cannot log in.
		{"-U with -b", []string{"-U", "-b", file}, "-b and -U cannot be used together", false},
		{"-I with -H sha512", []string{"-H", "sha512", "-I", "5", "-b", file, "bob", "pw"}, "-I applies to -H sha512-pbkdf2 only", false},
		{"-I over the most a file may hold", []string{"-I", "1000001", "-b", file, "bob", "pw"}, "at most 1000000 iterations", false},
		{"-I with trailing junk", []string{"-I", "5x", "-b", file, "bob", "pw"}, "must be a whole number > 0", false},
		{"user with blanks around it", []string{"-b", file, " bob ", "pw"}, "must not begin or end with white space", false},
		{"user with a C1 control character", []string{"-b", file, "bob\u0085", "pw"}, "control characters", false},
		{"user that reads as a comment", []string{"-b", file, "#bob", "pw"}, "must not begin with '#'", false},
		{"empty password, -b", []string{"-b", file, "bob", ""}, "invalid password: empty", false},
		{"password over 512 bytes, -b", []string{"-b", file, "bob", strings.Repeat("p", 513)}, "longer than 512 bytes", false},
		{"-c with an extra argument", []string{"-c", file, "bob", "extra"}, "want FILE USER, got 3", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, tool := range []passwdTool{toolPimqtt, toolMosquitto} {
				dir := t.TempDir()
				path := filepath.Join(dir, "passwd")
				const initial = "alice:$7$101$hdKWbldBgsoRjz6k$vMEWgkh50xI8Yt7jW2pp8VT5jHV2/PxxPGqy+j6Pd0CGwfjsJHEwPgEJIZWVfhXq2Ojzdm1lDMcKOtZzyiBBRQ==\n"
				if err := os.WriteFile(path, []byte(initial), 0o600); err != nil {
					t.Fatal(err)
				}
				args := make([]string, len(tt.args))
				for i, a := range tt.args {
					args[i] = strings.Replace(a, file, path, 1)
				}
				stdin := "pw-1\npw-1\n"
				if tt.want == "passwords do not match" {
					stdin = "pw-1\npw-2\n"
				}
				res := tool.run(t, stdin, args...)
				refused := res.code != 0
				data, _ := os.ReadFile(path)
				changed := string(data) != initial
				if tool.name == toolMosquitto.name {
					if refused != tt.mosquitto {
						t.Errorf("mosquitto_passwd: exit %d (refused %v), the table says refused %v\n%s%s", res.code, refused, tt.mosquitto, res.stdout, res.stderr)
					}
					continue
				}
				if !refused {
					t.Errorf("pimqtt passwd accepted it: %s%s", res.stdout, res.stderr)
				}
				if !strings.Contains(res.stderr, tt.want) {
					t.Errorf("stderr %q lacks %q", res.stderr, tt.want)
				}
				if strings.Contains(res.stdout, "Password:") && tt.want != "passwords do not match" {
					t.Errorf("prompted before refusing: %q", res.stdout)
				}
				if changed {
					t.Errorf("the file changed to %q", data)
				}
				assertOnlyFiles(t, dir, "passwd")
			}
		})
	}
}

// assertOnlyFiles fails if dir holds anything but names (e.g. a temporary
// file left behind).
func assertOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

// hashCombos are the -H and -I combinations, each with the start of the
// hash both tools must write for it.
var hashCombos = []struct {
	name   string
	flags  []string
	prefix string // a regular expression
}{
	{"default", nil, `\$7\$101\$`},
	{"-H sha512-pbkdf2", []string{"-H", "sha512-pbkdf2"}, `\$7\$101\$`},
	{"-H sha512", []string{"-H", "sha512"}, `\$6\$`},
	{"-I 1", []string{"-I", "1"}, `\$7\$1\$`},
	{"-I 1000", []string{"-I", "1000"}, `\$7\$1000\$`},
	{"-H sha512-pbkdf2 -I 250", []string{"-H", "sha512-pbkdf2", "-I", "250"}, `\$7\$250\$`},
}

// hashLine matches a whole line as both tools write it with prefix: a
// 12-byte salt and a 64-byte hash in padded base64.
func hashLine(prefix string) *regexp.Regexp {
	return regexp.MustCompile(`^[^:]+:` + prefix + `[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$`)
}

// login is a user and password, and whether they must get in.
type login struct {
	user, password string
	ok             bool
}

// crossFile is a password file one test case made, and what it must let in.
type crossFile struct {
	name   string
	path   string
	logins []login
}

// TestPasswdCrossMosquitto: for every -H/-I combination, in both orders,
// starting with -c -b and with -c (prompted), pimqtt passwd and
// mosquitto_passwd take turns on one file: each adds a user (-b, and
// prompted), each updates and each deletes a line the other one wrote.
// Every step must succeed (mosquitto_passwd refuses a file it cannot read
// as "Corrupt"), every line must have the format both write for the
// options, auth.Load must read the file without a warning and let in
// exactly the right passwords. -U is crossed the same way, and mosquitto's
// re-hashing of hashed lines (upstream 3416) is measured against ours.
// Finally the real mosquitto broker is started with all the files made
// here and mosquitto_pub must log in with every right password and be
// refused with the old ones.
func TestPasswdCrossMosquitto(t *testing.T) {
	var files []crossFile
	dir := t.TempDir() // the subtests' files live until the broker has read them
	n := 0
	for _, hc := range hashCombos {
		for _, order := range [][2]passwdTool{{toolPimqtt, toolMosquitto}, {toolMosquitto, toolPimqtt}} {
			for _, prompted := range []bool{false, true} {
				n++
				name := fmt.Sprintf("%s/%s first/-c prompted=%v", hc.name, order[0].name, prompted)
				t.Run(name, func(t *testing.T) {
					files = append(files, crossSequence(t, filepath.Join(dir, fmt.Sprintf("s%d", n)), name, fmt.Sprintf("s%d-", n), hc.flags, hc.prefix, order[0], order[1], prompted))
				})
			}
		}
		n++
		t.Run(hc.name+"/-U", func(t *testing.T) {
			files = append(files, crossUpdate(t, filepath.Join(dir, fmt.Sprintf("u%d", n)), hc.name, fmt.Sprintf("u%d-", n), hc.flags, hc.prefix)...)
		})
	}
	if t.Failed() {
		return
	}

	// One broker for every file: lines are what mosquitto reads one by one,
	// and the users' prefixes keep the files apart.
	var all bytes.Buffer
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(data)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			all.WriteByte('\n')
		}
	}
	path := filepath.Join(t.TempDir(), "all")
	if err := os.WriteFile(path, all.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{"allow_anonymous false", "password_file " + path}})
	port := fmt.Sprint(m.Port)
	for _, f := range files {
		for _, l := range f.logins {
			out, code := mosquittoPub(t, "-h", "127.0.0.1", "-p", port, "-u", l.user, "-P", l.password, "-t", "t", "-m", "x")
			switch {
			case l.ok && code != 0:
				t.Errorf("%s: mosquitto refused %q with its password %q: exit %d %s", f.name, l.user, l.password, code, out)
			case !l.ok && code == 0:
				t.Errorf("%s: mosquitto let %q in with the wrong password %q", f.name, l.user, l.password)
			case !l.ok && !strings.Contains(out, "not authorised"):
				t.Errorf("%s: %q with %q: exit %d, %q does not say not authorised", f.name, l.user, l.password, code, out)
			}
		}
	}
}

// crossSequence is one sequence of TestPasswdCrossMosquitto: a and b take
// turns on one file; it returns the file and the logins the broker checks.
// path is the file (it must not exist yet).
func crossSequence(t *testing.T, path, name, p string, flags []string, prefix string, a, b passwdTool, prompted bool) crossFile {
	with := func(args ...string) []string { return append(append([]string{}, flags...), args...) }
	twice := func(pw string) string { return pw + "\n" + pw + "\n" }
	create := with("-c", "-b", path, p+"alice", "alice pw")
	createIn := ""
	if prompted {
		create, createIn = with("-c", path, p+"alice"), twice("alice pw")
	}
	steps := []struct {
		tool  passwdTool
		stdin string
		args  []string
	}{
		{a, createIn, create},
		{b, "", with("-b", path, p+"bob", "bob pw: with colon")},
		{a, twice("pässwörd ✓"), with(path, p+"carol")},
		{b, twice("dave-pw"), with(path, p+"dave")},
		{a, "", with("-b", path, p+"bob", "bob-new")},     // a updates b's line
		{b, "", with("-b", path, p+"carol", "carol-new")}, // b updates a's line
		{a, "", with("-D", path, p+"dave")},               // a deletes b's line
		{a, "", with("-b", path, p+"erin", "-erin-pw")},   // a password that begins with '-'
		{b, "", with("-D", path, p+"erin")},               // b deletes a's line
	}
	for i, s := range steps {
		if res := s.tool.run(t, s.stdin, s.args...); res.code != 0 {
			data, _ := os.ReadFile(path)
			t.Fatalf("step %d: %s %q: exit %d\n%s%s\nfile:\n%s", i+1, s.tool.name, s.args, res.code, res.stdout, res.stderr, data)
		}
	}
	logins := []login{
		{p + "alice", "alice pw", true},
		{p + "bob", "bob-new", true},
		{p + "carol", "carol-new", true},
		{p + "bob", "bob pw: with colon", false},
		{p + "carol", "pässwörd ✓", false},
		{p + "dave", "dave-pw", false},
		{p + "erin", "-erin-pw", false},
	}
	checkCrossFile(t, path, prefix, 3, logins)
	// The broker checks one old password per file: Load checked them all.
	return crossFile{name, path, logins[:4]}
}

// crossUpdate crosses -U: plaintext hashed by mosquitto_passwd is read by
// auth.Load; plaintext hashed by pimqtt passwd is read by mosquitto_passwd
// and (returned) by the broker; a file with hashed and plaintext lines
// keeps its hashed lines with pimqtt and loses them with mosquitto.
// Its files are made in dir.
func crossUpdate(t *testing.T, dir, name, p string, flags []string, prefix string) []crossFile {
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	with := func(args ...string) []string { return append(append([]string{}, flags...), args...) }
	write := func(file, content string) string {
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	mustRun := func(tool passwdTool, args ...string) {
		t.Helper()
		if res := tool.run(t, "", args...); res.code != 0 {
			t.Fatalf("%s %q: exit %d\n%s%s", tool.name, args, res.code, res.stdout, res.stderr)
		}
	}
	plain := p + "alice:alice pw\n" + p + "bob:  bob-pw \t\n"
	plainLogins := []login{{p + "alice", "alice pw", true}, {p + "bob", "bob-pw", true}, {p + "bob", "  bob-pw", false}}

	// mosquitto_passwd -U ignores -I (measured: it writes 101 iterations).
	mosqPrefix := prefix
	if strings.HasPrefix(prefix, `\$7\$`) {
		mosqPrefix = `\$7\$101\$`
	}
	byMosquitto := write("by-mosquitto", plain)
	mustRun(toolMosquitto, with("-U", byMosquitto)...)
	checkCrossFile(t, byMosquitto, mosqPrefix, 2, plainLogins)

	byPimqtt := write("by-pimqtt", plain)
	mustRun(toolPimqtt, with("-U", byPimqtt)...)
	checkCrossFile(t, byPimqtt, prefix, 2, plainLogins)
	mustRun(toolMosquitto, with("-b", byPimqtt, p+"carol", "carol-pw")...) // mosquitto_passwd reads our -U output
	checkCrossFile(t, byPimqtt, prefix, 3, append(plainLogins, login{p + "carol", "carol-pw", true}))

	// A hashed file with a plaintext line added by hand.
	mixed := filepath.Join(dir, "mixed")
	mustRun(toolMosquitto, with("-c", "-b", mixed, p+"old", "old-pw")...)
	hashed, err := os.ReadFile(mixed)
	if err != nil {
		t.Fatal(err)
	}
	mixedContent := string(hashed) + p + "new:new-pw\n"
	mixedLogins := []login{{p + "old", "old-pw", true}, {p + "new", "new-pw", true}}
	write("mixed", mixedContent)
	mustRun(toolPimqtt, with("-U", mixed)...)
	after, _ := os.ReadFile(mixed)
	if !strings.HasPrefix(string(after), string(hashed)) {
		t.Errorf("pimqtt passwd -U changed the line already hashed:\n%s\nto\n%s", hashed, after)
	}
	checkCrossFile(t, mixed, prefix, 2, mixedLogins)

	// What mosquitto_passwd -U does to the same file (upstream 3416): the
	// hash is hashed as if it were a password, and the user is locked out.
	mosqMixed := write("mosquitto-mixed", mixedContent)
	mustRun(toolMosquitto, with("-U", mosqMixed)...)
	pw, err := auth.Load(mosqMixed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pw.Check(p+"old", "old-pw") || !pw.Check(p+"new", "new-pw") {
		t.Errorf("mosquitto_passwd -U no longer re-hashes hashed lines (upstream 3416 fixed?): revisit HashPlaintext's doc")
	}
	return []crossFile{
		{name + "/-U by pimqtt", byPimqtt, append(plainLogins, login{p + "carol", "carol-pw", true})},
		{name + "/-U of a mixed file by pimqtt", mixed, mixedLogins},
	}
}

// checkCrossFile checks that every line of the file at path is a hash
// starting with prefix, that there are users of them, and that auth.Load
// reads it without a warning about its lines and lets in exactly logins.
func checkCrossFile(t *testing.T, path, prefix string, users int, logins []login) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	format := hashLine(prefix)
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if !format.MatchString(line) {
			t.Errorf("line %q does not match %s", line, format)
		}
	}
	var logs bytes.Buffer
	pw, err := auth.Load(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "line skipped") || strings.Contains(logs.String(), "duplicate") {
		t.Errorf("auth.Load warned about the lines:\n%s", logs.String())
	}
	if pw.Len() != users {
		t.Errorf("%d users, want %d:\n%s", pw.Len(), users, data)
	}
	for _, l := range logins {
		if got := pw.Check(l.user, l.password); got != l.ok {
			t.Errorf("Check(%q, %q) = %v, want %v", l.user, l.password, got, l.ok)
		}
	}
}

// TestPasswdExposureWarning: a password file open to its group or to every
// user is reported on stderr, saying what pimqtt passwd did about it (the
// rewrite makes it 0600) or, when nothing was written, how to fix it.
// mosquitto 2.0.16+ warns about "other" bits only (2.0.11 not at all);
// the group is named too because the rewrite takes its access away.
func TestPasswdExposureWarning(t *testing.T) {
	const alice = "alice:$7$101$hdKWbldBgsoRjz6k$vMEWgkh50xI8Yt7jW2pp8VT5jHV2/PxxPGqy+j6Pd0CGwfjsJHEwPgEJIZWVfhXq2Ojzdm1lDMcKOtZzyiBBRQ==\n"
	tests := []struct {
		name    string
		mode    os.FileMode // 0: no file
		content string
		args    []string // FILE is the file
		code    int
		want    string // in stderr; "" means no warning at all
		mode2   os.FileMode
	}{
		{"-b on 0644", 0o644, alice, []string{"-b", "FILE", "bob", "pw"}, 0,
			"was open to its group and every user (mode 0644); it is now 0600", 0o600},
		{"-D on 0640", 0o640, alice, []string{"-D", "FILE", "alice"}, 0, "was open to its group (mode 0640); it is now 0600", 0o600},
		{"-c over 0604", 0o604, alice, []string{"-c", "-b", "FILE", "bob", "pw"}, 0, "was open to every user (mode 0604)", 0o600},
		{"-U on 0666", 0o666, "bob:pw\n", []string{"-U", "FILE"}, 0, "was open to its group and every user (mode 0666)", 0o600},
		{"-D of nobody on 0644: nothing written", 0o644, alice, []string{"-D", "FILE", "nobody"}, 1,
			"is open to its group and every user (mode 0644), who can copy the hashes and guess passwords offline; chmod 0600 ", 0o644},
		{"-U with nothing to hash on 0604", 0o604, alice, []string{"-U", "FILE"}, 0, "is open to every user (mode 0604)", 0o604},
		{"0600", 0o600, alice, []string{"-b", "FILE", "bob", "pw"}, 0, "", 0o600},
		{"0400 read by its owner only", 0o400, alice, []string{"-b", "FILE", "bob", "pw"}, 0, "", 0o600},
		{"new file", 0, "", []string{"-c", "-b", "FILE", "bob", "pw"}, 0, "", 0o600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "passwd")
			if tt.mode != 0 {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.Replace(a, "FILE", path, 1)
			}
			res := pimqttPasswd(t, "", args...)
			if res.code != tt.code {
				t.Errorf("exit %d, want %d: %s", res.code, tt.code, res.stderr)
			}
			switch {
			case tt.want == "" && strings.Contains(res.stderr, "warning"):
				t.Errorf("unexpected warning: %s", res.stderr)
			case tt.want != "" && !strings.Contains(res.stderr, "warning: "+path+" "+strings.SplitN(tt.want, " ", 2)[0]):
				t.Errorf("stderr %q does not warn about %s", res.stderr, path)
			case !strings.Contains(res.stderr, tt.want):
				t.Errorf("stderr %q lacks %q", res.stderr, tt.want)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tt.mode2 {
				t.Errorf("mode %v after, want %v", fi.Mode().Perm(), tt.mode2)
			}
		})
	}
}
