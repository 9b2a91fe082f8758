package auth

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// ReadPasswordTwice asks for a password twice, like mosquitto_passwd,
// writing the prompts "Password: " and "Reenter password: " to out, each
// ending its line once answered. When in is a terminal, typing is not
// echoed and Ctrl-C or Ctrl-D cancels with an error (the terminal is
// restored either way). Otherwise one line is read per prompt, so pipes
// and tests work. The password is validated (not
// empty, at most MaxPasswordLen bytes); if the two differ the error is
// ErrPasswordMismatch.
func ReadPasswordTwice(in *os.File, out io.Writer) (string, error) {
	read := readLineNoTerminal
	if fd := int(in.Fd()); term.IsTerminal(fd) {
		var restore func()
		var err error
		read, restore, err = terminalReader(fd, in, out)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		defer restore()
	}
	first, err := read(in, out, "Password: ")
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if err := validatePassword(first); err != nil {
		return "", err
	}
	second, err := read(in, out, "Reenter password: ")
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(first), []byte(second)) != 1 {
		return "", ErrPasswordMismatch
	}
	return first, nil
}

type lineReader func(in *os.File, out io.Writer, prompt string) (string, error)

// terminalReader puts the terminal in raw mode for both prompts. Raw mode
// (unlike term.ReadPassword, which leaves signals on) turns Ctrl-C into a
// byte we handle, so an interrupted prompt cannot leave the user's terminal
// with echo switched off.
func terminalReader(fd int, in *os.File, out io.Writer) (lineReader, func(), error) {
	state, err := term.MakeRaw(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("set terminal raw mode: %w", err)
	}
	restore := func() { _ = term.Restore(fd, state) }
	t := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{in, out}, "")
	read := func(_ *os.File, _ io.Writer, prompt string) (string, error) {
		line, err := t.ReadPassword(prompt)
		// A paste indicator only says how the line arrived.
		if errors.Is(err, term.ErrPasteIndicator) {
			err = nil
		}
		if err != nil {
			// The terminal ends the line on Enter only; on Ctrl-C or Ctrl-D the error
			// printed next would follow the prompt on its line. Raw mode: "\r\n".
			_, _ = io.WriteString(out, "\r\n")
		}
		if errors.Is(err, io.EOF) {
			return "", errors.New("cancelled")
		}
		if err != nil {
			return "", err
		}
		if len(line) > MaxPasswordLen {
			return "", fmt.Errorf("invalid password: longer than %d bytes", MaxPasswordLen)
		}
		return line, nil
	}
	return read, restore, nil
}

// readLineNoTerminal reads one line a byte at a time: a buffered reader
// would swallow input meant for whoever reads in after us. A final line
// without a newline is accepted; "\r\n" endings are too. The prompt's line
// is ended once the line is read (or not): nothing echoes the input here,
// so without it the prompts, and whatever follows, would run together on
// one line.
func readLineNoTerminal(in *os.File, out io.Writer, prompt string) (string, error) {
	if _, err := io.WriteString(out, prompt); err != nil {
		return "", fmt.Errorf("write prompt: %w", err)
	}
	line, err := readPasswordLine(in)
	if _, werr := io.WriteString(out, "\n"); werr != nil && err == nil {
		return "", fmt.Errorf("write prompt: %w", werr)
	}
	return line, err
}

// readPasswordLine is readLineNoTerminal's reading.
func readPasswordLine(in *os.File) (string, error) {
	var line []byte
	var b [1]byte
	for {
		n, err := in.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			// +1 leaves room for the '\r' of a CRLF ending.
			if len(line) >= MaxPasswordLen+1 {
				return "", fmt.Errorf("invalid password: longer than %d bytes", MaxPasswordLen)
			}
			line = append(line, b[0])
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return "", fmt.Errorf("no password given: %w", io.ErrUnexpectedEOF)
			}
			break
		}
		if err != nil {
			return "", err
		}
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > MaxPasswordLen {
		return "", fmt.Errorf("invalid password: longer than %d bytes", MaxPasswordLen)
	}
	return string(line), nil
}
