package auth

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

func TestReadPasswordTwicePipe(t *testing.T) {
	// Nothing echoes piped input, so each prompt ends its own line once answered (or not):
	// "Password: Reenter password: " on one line, with the shell's prompt glued after it, was
	// how it looked.
	const (
		one  = "Password: \n"
		both = "Password: \nReenter password: \n"
	)
	tests := []struct {
		name    string
		input   string
		want    string
		wantErr string // substring; "" means success
		rest    string // what must still be unread afterwards
		out     string // the prompts written
	}{
		{name: "match", input: "s3cret\ns3cret\n", want: "s3cret", out: both},
		{name: "CRLF and no final newline", input: "s3cret\r\ns3cret", want: "s3cret", out: both},
		{name: "spaces are kept", input: " a b \n a b \n", want: " a b ", out: both},
		{name: "input after the two lines is left alone", input: "pw\npw\nnext line\n", want: "pw", rest: "next line\n", out: both},
		{name: "mismatch", input: "one\ntwo\n", wantErr: "passwords do not match", out: both},
		{name: "empty", input: "\n\n", wantErr: "empty", out: one},
		{name: "nothing at all", input: "", wantErr: "no password given", out: one},
		{name: "second missing", input: "pw\n", wantErr: "no password given", out: both},
		{name: "too long", input: strings.Repeat("p", MaxPasswordLen+1) + "\n", wantErr: "longer than 512 bytes", out: one},
		{name: "longest allowed", input: strings.Repeat("p", MaxPasswordLen) + "\r\n" + strings.Repeat("p", MaxPasswordLen) + "\n", want: strings.Repeat("p", MaxPasswordLen), out: both},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			// Every input fits in the pipe buffer, so no writer goroutine.
			if _, err := io.WriteString(w, tt.input); err != nil {
				t.Fatal(err)
			}
			w.Close()

			var out bytes.Buffer
			got, err := ReadPasswordTwice(r, &out)
			if out.String() != tt.out {
				t.Errorf("prompts = %q, want %q", out.String(), tt.out)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadPasswordTwice = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				if tt.wantErr == "passwords do not match" && !errors.Is(err, ErrPasswordMismatch) {
					t.Errorf("error %v is not ErrPasswordMismatch", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ReadPasswordTwice = %.20q, %v; want %.20q", got, err, tt.want)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != tt.rest {
				t.Errorf("left unread %q, want %q", rest, tt.rest)
			}
		})
	}
}
