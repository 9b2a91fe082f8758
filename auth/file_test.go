package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// assertOnlyFiles fails if dir holds anything but names, e.g. a temporary
// file left behind by an interrupted atomic replace.
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
		t.Errorf("directory holds %q, want %q", got, names)
	}
}

func assertMode0600(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
}

func mustLoad(t *testing.T, path string) *Passwords {
	t.Helper()
	p, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSetPasswordCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	if err := os.WriteFile(path, []byte(piLine+"\n"+legacyLine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// create overwrites: only the new user is left, as with mosquitto_passwd -c.
	if err := SetPassword(path, "alice", "s3cret", true); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "alice:$7$101$") || strings.Count(string(data), "\n") != 1 {
		t.Errorf("file after create = %q", data)
	}
	p := mustLoad(t, path)
	if p.Len() != 1 || !p.Check("alice", "s3cret") || p.Check("alice", "S3cret") || p.Check("pi", "raspberry") {
		t.Errorf("after create: Len %d, checks wrong", p.Len())
	}
	assertMode0600(t, path)
	assertOnlyFiles(t, dir, "passwd")

	// create also works where there is no file yet.
	fresh := filepath.Join(dir, "fresh")
	if err := SetPassword(fresh, "bob", "pw", true); err != nil {
		t.Fatal(err)
	}
	if !mustLoad(t, fresh).Check("bob", "pw") {
		t.Error("bob cannot log in to the fresh file")
	}
	assertMode0600(t, fresh)
	assertOnlyFiles(t, dir, "fresh", "passwd")
}

func TestSetPasswordUpdate(t *testing.T) {
	// Comments, CRLF, a malformed line, a duplicate and no final newline:
	// everything that is not the updated user must survive byte for byte.
	const (
		head = "# managed by hand\r\n" + piLine + "\r\n\n  # indented\nnot a user line\nbroken:$7$0$x$y\n"
		tail = legacyLine + "\n" + userLine
	)
	tests := []struct {
		name    string
		initial string
		user    string
		// want is a function of the new line written for user.
		want func(newLine string) string
	}{
		{
			name:    "update keeps its CRLF and every other line",
			initial: head + tail,
			user:    "pi",
			want: func(l string) string {
				return strings.Replace(head, piLine+"\r\n", l+"\r\n", 1) + tail
			},
		},
		{
			name:    "update of a last line without newline",
			initial: head + tail,
			user:    "user",
			want:    func(l string) string { return head + legacyLine + "\n" + l + "\r\n" },
		},
		{
			name:    "append after a last line without newline uses the file's CRLF",
			initial: head + tail,
			user:    "carol",
			want:    func(l string) string { return head + tail + "\r\n" + l + "\r\n" },
		},
		{
			name:    "append with LF",
			initial: legacyLine + "\n",
			user:    "carol",
			want:    func(l string) string { return legacyLine + "\n" + l + "\n" },
		},
		{
			name:    "append to an empty file",
			initial: "",
			user:    "carol",
			want:    func(l string) string { return l + "\n" },
		},
		{
			name:    "later duplicates are dropped so the new password takes effect",
			initial: piLine + "\n" + legacyLine + "\n" + piLine + "\n",
			user:    "pi",
			want:    func(l string) string { return l + "\n" + legacyLine + "\n" },
		},
		{
			name:    "blanks around the user name still match",
			initial: "  pi :" + strings.TrimPrefix(piLine, "pi:") + "\n" + legacyLine + "\n",
			user:    "pi",
			want:    func(l string) string { return l + "\n" + legacyLine + "\n" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "passwd")
			if err := os.WriteFile(path, []byte(tt.initial), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := SetPassword(path, tt.user, "n3w-pass", false); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Find the line we wrote to build the expected content.
			var newLine string
			for _, l := range strings.Split(string(data), "\n") {
				if strings.HasPrefix(l, tt.user+":$7$101$") {
					newLine = strings.TrimSuffix(l, "\r")
				}
			}
			if newLine == "" {
				t.Fatalf("no new line for %s in %q", tt.user, data)
			}
			if want := tt.want(newLine); string(data) != want {
				t.Errorf("file =\n%q\nwant\n%q", data, want)
			}
			p := mustLoad(t, path)
			if !p.Check(tt.user, "n3w-pass") {
				t.Errorf("%s cannot log in with the new password", tt.user)
			}
			if tt.user != "pi" && strings.Contains(tt.initial, piLine) && !p.Check("pi", "raspberry") {
				t.Error("pi lost its password")
			}
			assertMode0600(t, path)
			assertOnlyFiles(t, dir, "passwd")
		})
	}
}

func TestSetPasswordErrors(t *testing.T) {
	const initial = "# keep\n" + piLine + "\n"
	tests := []struct {
		name, user, password string
	}{
		{"empty user", "", "pw"},
		{"colon in user", "a:b", "pw"},
		{"tab in user", "a\tb", "pw"},
		{"newline in user", "a\nb", "pw"},
		{"NUL in user", "a\x00b", "pw"},
		{"leading blank", " pi", "pw"},
		{"comment-like user", "#pi", "pw"},
		{"invalid UTF-8", "\xff", "pw"},
		{"user too long", strings.Repeat("u", MaxUsernameLen+1), "pw"},
		{"empty password", "pi", ""},
		{"password too long", "pi", strings.Repeat("p", MaxPasswordLen+1)},
	}
	for _, tt := range tests {
		for _, create := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/create=%v", tt.name, create), func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "passwd")
				if err := os.WriteFile(path, []byte(initial), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := SetPassword(path, tt.user, tt.password, create); err == nil {
					t.Fatalf("SetPassword(%.20q, create=%v) succeeded", tt.user, create)
				}
				if data, _ := os.ReadFile(path); string(data) != initial {
					t.Errorf("file changed to %q", data)
				}
				assertOnlyFiles(t, dir, "passwd")
			})
		}
	}
}

func TestSetPasswordMissingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	err := SetPassword(path, "alice", "pw", false)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SetPassword on a missing file without create: %v, want fs.ErrNotExist", err)
	}
	assertOnlyFiles(t, dir)
}

// TestSetPasswordFailedRenameCleansUp makes the final rename fail (the
// target is a non-empty directory) and checks no temporary file is left.
func TestSetPasswordFailedRenameCleansUp(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "passwd")
	if err := os.MkdirAll(filepath.Join(target, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(target, "alice", "pw", true); err == nil {
		t.Fatal("SetPassword over a directory succeeded")
	}
	assertOnlyFiles(t, dir, "passwd")
}

func TestSetPasswordFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	if err := os.WriteFile(real, []byte(piLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", link); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(link, "alice", "pw", false); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("link replaced by a regular file (%v)", err)
	}
	p := mustLoad(t, real)
	if !p.Check("alice", "pw") || !p.Check("pi", "raspberry") {
		t.Error("real file not updated correctly")
	}
	assertOnlyFiles(t, dir, "link", "real")
}

func TestDeleteUser(t *testing.T) {
	const initial = "# users\r\n" + piLine + "\r\n" + legacyLine + "\n\nnot a user\n" + piLine + "\n" + userLine
	tests := []struct {
		name string
		user string
		want string // "" means: the file must not change and the error must be ErrUserNotFound
	}{
		{"every line of the user goes", "pi", "# users\r\n" + legacyLine + "\n\nnot a user\n" + userLine},
		{"last line without newline", "user", "# users\r\n" + piLine + "\r\n" + legacyLine + "\n\nnot a user\n" + piLine + "\n"},
		{"unknown user", "mallory", ""},
		{"a comment is not a user", "# users", ""},
		{"a line without ':' is not a user", "not a user", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "passwd")
			if err := os.WriteFile(path, []byte(initial), 0o644); err != nil {
				t.Fatal(err)
			}
			err := DeleteUser(path, tt.user)
			data, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if tt.want == "" {
				if err == nil {
					t.Fatal("DeleteUser succeeded")
				}
				if ValidateUsername(tt.user) == nil && !errors.Is(err, ErrUserNotFound) {
					t.Errorf("error %v does not wrap ErrUserNotFound", err)
				}
				if string(data) != initial {
					t.Errorf("file changed to %q", data)
				}
				if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
					t.Errorf("mode changed to %v", fi.Mode().Perm())
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if string(data) != tt.want {
					t.Errorf("file =\n%q\nwant\n%q", data, tt.want)
				}
				if mustLoad(t, path).Check(tt.user, "raspberry") {
					t.Error("deleted user can still log in")
				}
				assertMode0600(t, path)
			}
			assertOnlyFiles(t, dir, "passwd")
		})
	}
}

func TestDeleteUserMissingFile(t *testing.T) {
	err := DeleteUser(filepath.Join(t.TempDir(), "nope"), "pi")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("DeleteUser on a missing file: %v, want fs.ErrNotExist", err)
	}
}

// TestSetThenDeleteRoundTrip runs the two together the way an operator
// would, ending with an empty but valid file.
func TestSetThenDeleteRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	steps := []func() error{
		func() error { return SetPassword(path, "a", "1", true) },
		func() error { return SetPassword(path, "b", "2", false) },
		func() error { return SetPassword(path, "a", "3", false) },
		func() error { return DeleteUser(path, "b") },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	p := mustLoad(t, path)
	if p.Len() != 1 || !p.Check("a", "3") || p.Check("a", "1") || p.Check("b", "2") {
		t.Error("round trip gave the wrong users")
	}
	if err := DeleteUser(path, "a"); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); len(data) != 0 {
		t.Errorf("file after deleting everyone = %q", data)
	}
}
