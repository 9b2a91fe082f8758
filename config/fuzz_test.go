package config

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// sandboxKeys are the mosquitto.conf keys whose value is a path the import
// might open (include_dir is read now; the others may be checked one day).
// The fuzz harness moves every such path under its temporary directory, so
// an input saying "include_dir /etc" or "acl_file ../../x" reads nothing of
// the machine's.
var sandboxKeys = map[string]bool{
	"include_dir": true, "password_file": true, "acl_file": true, "psk_file": true,
	"cafile": true, "capath": true, "certfile": true, "keyfile": true, "crlfile": true,
	"dhparamfile": true, "http_dir": true,
}

// sandbox rewrites conf so that the value of every sandboxKeys line is a
// path under root: the value read as if root were "/" ("/etc/x" and
// "../../etc/x" both become ROOT/etc/x). The key is found however the
// import splits it from its value (a space now; any white space would be
// caught too). Other lines are kept byte for byte.
func sandbox(conf []byte, root string) []byte {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(conf, []byte{'\n'}) {
		body := bytes.TrimRight(line, "\r\n")
		text := strings.TrimSpace(string(body))
		key, value := text, ""
		if i := strings.IndexFunc(text, unicode.IsSpace); i >= 0 {
			key, value = text[:i], strings.TrimSpace(text[i:])
		}
		if !sandboxKeys[key] || value == "" {
			out.Write(line)
			continue
		}
		out.WriteString(key + " " + filepath.Join(root, filepath.Clean("/"+value)))
		out.Write(line[len(body):])
	}
	return out.Bytes()
}

// within reports whether path is root or under it.
func within(path, root string) bool {
	return path == root || strings.HasPrefix(path, root+string(filepath.Separator))
}

// errorLeaves are the errors errors.Join and %w wrapped into err that wrap
// nothing further.
func errorLeaves(err error) []error {
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		var out []error
		for _, inner := range e.Unwrap() {
			out = append(out, errorLeaves(inner)...)
		}
		return out
	case *Error:
		return []error{e}
	case interface{ Unwrap() error }:
		if inner := e.Unwrap(); inner != nil {
			return errorLeaves(inner)
		}
	}
	return []error{err}
}

// FuzzImportMosquitto: the mosquitto.conf import, with a second file
// reached through include_dir (its seed corpus, testdata/fuzz/
// FuzzImportMosquitto, holds mosquitto's own example configuration,
// Debian's, the seed's and the cases of mosquitto_test.go). Whatever the
// files hold, the import never reads outside the sandbox and says so (every
// notice and error names a file in it, at a line it has), gives the same
// answer twice, and what it accepts is a broker section pimqtt's own
// validation accepts (listeners on HOST:PORT with a port from 1 to 65535,
// limits in range), leaving aside listeners given twice, which only the
// validation refuses.
func FuzzImportMosquitto(f *testing.F) {
	f.Add([]byte("listener 1883\nallow_anonymous false\npassword_file /etc/mosquitto/passwd\ninclude_dir /etc/mosquitto/conf.d\n"),
		[]byte("listener 8083\nprotocol websockets\n"))
	// One sandbox per process, its two files rewritten for each input: a
	// new directory per input would cost more than the import.
	root := f.TempDir()
	incDir := filepath.Join(root, "etc", "mosquitto", "conf.d")
	if err := os.MkdirAll(incDir, 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, conf, included []byte) {
		files := map[string][]byte{
			filepath.Join(root, "mosquitto.conf"): sandbox(conf, root),
			filepath.Join(incDir, "fuzz.conf"):    sandbox(included, root),
		}
		for path, data := range files {
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		main := filepath.Join(root, "mosquitto.conf")
		b, notices, err := ImportMosquitto(main)
		b2, notices2, err2 := ImportMosquitto(main)
		if !reflect.DeepEqual(b, b2) || !reflect.DeepEqual(notices, notices2) || (err == nil) != (err2 == nil) ||
			(err != nil && err.Error() != err2.Error()) {
			t.Fatalf("two imports of the same file differ:\n%+v %v %v\n%+v %v %v", b, notices, err, b2, notices2, err2)
		}
		// A position names a line the file has (mosquitto's line count,
		// a final line without '\n' included).
		checkPosition := func(what, file string, line int) {
			if !within(file, root) {
				t.Fatalf("%s names %q, outside the sandbox %s", what, file, root)
			}
			data, known := files[file]
			if line < 0 || (known && line > bytes.Count(data, []byte{'\n'})+1) {
				t.Fatalf("%s names line %d of %s, which has %d bytes", what, line, file, len(data))
			}
		}
		if err != nil {
			for _, leaf := range errorLeaves(err) {
				var e *Error
				if errors.As(leaf, &e) {
					checkPosition("error "+e.Error(), e.File, e.Line)
				}
			}
			return
		}
		for _, n := range notices {
			if n.Key == "" {
				t.Fatalf("notice without a key: %v", n)
			}
			checkPosition("notice "+n.String(), n.File, n.Line)
		}
		if b.PasswordFile != "" && !within(b.PasswordFile, root) {
			t.Fatalf("password file %q outside the sandbox", b.PasswordFile)
		}
		seen := map[string]bool{}
		var listeners []Listener
		for _, l := range b.Listeners {
			_, port, perr := net.SplitHostPort(l.Address)
			n, nerr := strconv.Atoi(port)
			if perr != nil || nerr != nil || n < 1 || n > 65535 {
				t.Fatalf("listener address %q is not HOST:PORT with a port from 1 to 65535", l.Address)
			}
			if !seen[l.Address] {
				seen[l.Address] = true
				listeners = append(listeners, l)
			}
		}
		c := Default()
		c.Broker = b
		c.Broker.Listeners = listeners
		if verr := c.Validate(); verr != nil {
			t.Fatalf("the import accepted what validation refuses: %v\nbroker: %+v", verr, b)
		}
	})
}

// TestSandbox: the fuzz harness's own guard.
func TestSandbox(t *testing.T) {
	root := "/sandbox"
	tests := []struct{ in, want string }{
		{"include_dir /etc/mosquitto/conf.d\n", "include_dir /sandbox/etc/mosquitto/conf.d\n"},
		{"include_dir ../../../etc\r\n", "include_dir /sandbox/etc\r\n"},
		{"  include_dir\t \tconf.d", "include_dir /sandbox/conf.d"},
		{"acl_file /etc/mosquitto/acl\nlistener 1883\n", "acl_file /sandbox/etc/mosquitto/acl\nlistener 1883\n"},
		{"password_file /etc/my passwd\n", "password_file /sandbox/etc/my passwd\n"},
		{"include_dir\n", "include_dir\n"},
		{"include_dirx /etc\n#include_dir /etc\n", "include_dirx /etc\n#include_dir /etc\n"},
	}
	for _, tt := range tests {
		if got := string(sandbox([]byte(tt.in), root)); got != tt.want {
			t.Errorf("sandbox(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
