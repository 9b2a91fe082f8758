package auth

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestCheckPasswordFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"passwd": piLine + "\n", "afile": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }

	tests := []struct {
		path   string
		create bool
		want   string // "" means no error; else SetPassword says the same
		is     error  // wrapped by the error
	}{
		{path: p("missing/passwd"), create: true,
			want: "cannot write " + p("missing/passwd") + ": directory " + p("missing") + " does not exist; create it first (mkdir -p " + p("missing") + ")",
			is:   fs.ErrNotExist},
		{path: p("missing/passwd"), create: false,
			want: "cannot write " + p("missing/passwd") + ": directory " + p("missing") + " does not exist; create it first (mkdir -p " + p("missing") + ")",
			is:   fs.ErrNotExist},
		{path: p("new"), create: false, want: p("new") + ": no such file; use -c to create it", is: fs.ErrNotExist},
		{path: p("dangling"), create: false, want: p("dangling") + ": no such file; use -c to create it", is: fs.ErrNotExist},
		{path: p("new"), create: true},
		{path: p("passwd"), create: false},
		{path: p("passwd"), create: true},
		{path: p("link"), create: false},
		{path: p("adir"), create: false, want: p("adir") + " is not a regular file (a directory); give the path of a password file"},
		{path: p("adir"), create: true, want: p("adir") + " is not a regular file (a directory); give the path of a password file"},
		{path: p("afile/passwd"), create: true, want: "cannot write " + p("afile/passwd") + ": " + p("afile") + " is not a directory"},
		{path: "", create: true, want: "no password file given"},
	}
	for _, tt := range tests {
		before := listDir(t, dir)
		err := CheckPasswordFile(tt.path, tt.create)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckPasswordFile(%s, create=%v) = %v, want nil", tt.path, tt.create, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("CheckPasswordFile(%s, create=%v) = %v\nwant %s", tt.path, tt.create, err, tt.want)
		case tt.is != nil && !errors.Is(err, tt.is):
			t.Errorf("CheckPasswordFile(%s, create=%v) = %v, does not wrap %v", tt.path, tt.create, err, tt.is)
		}
		if after := listDir(t, dir); !slices.Equal(before, after) {
			t.Errorf("CheckPasswordFile(%s, create=%v) left %v, was %v", tt.path, tt.create, after, before)
		}
		// SetPassword says the same before writing anything.
		if tt.want == "" {
			continue
		}
		if err := SetPassword(tt.path, "alice", "pw", tt.create); err == nil || err.Error() != tt.want {
			t.Errorf("SetPassword(%s, create=%v) = %v\nwant %s", tt.path, tt.create, err, tt.want)
		}
		if after := listDir(t, dir); !slices.Equal(before, after) {
			t.Errorf("SetPassword(%s, create=%v) left %v, was %v", tt.path, tt.create, after, before)
		}
	}
}

// TestDeleteUserCheck: DeleteUser explains a path it cannot use, without advising to create
// a file to delete from.
func TestDeleteUserCheck(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ path, want string }{
		{filepath.Join(dir, "missing", "passwd"), "cannot write " + filepath.Join(dir, "missing", "passwd") + ": directory " +
			filepath.Join(dir, "missing") + " does not exist; create it first (mkdir -p " + filepath.Join(dir, "missing") + ")"},
		{filepath.Join(dir, "passwd"), filepath.Join(dir, "passwd") + ": no such file"},
	}
	for _, tt := range tests {
		err := DeleteUser(tt.path, "pi")
		if err == nil || err.Error() != tt.want || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("DeleteUser(%s) = %v\nwant %s", tt.path, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "-c") {
			t.Errorf("DeleteUser(%s) advises -c: %v", tt.path, err)
		}
	}
}
