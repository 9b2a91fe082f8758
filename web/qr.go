package web

import (
	"fmt"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// QRText renders url as a QR code made of text, for a terminal: two rows of modules per line
// with the half-block characters, dark modules as the terminal's background and light ones as
// its foreground, which scans on the usual light-on-dark terminal. A phone's camera reads it
// from the screen, so a second phone joins without typing the address.
func QRText(url string) (string, error) {
	q, err := qrcode.New(url, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("web: QR code of %q: %w", url, err)
	}
	return q.ToSmallString(false), nil
}

// qrSVG renders url as a QR code in SVG: one path of dark modules on white, with the standard
// quiet zone, crisp at any size.
func qrSVG(url string) ([]byte, error) {
	q, err := qrcode.New(url, qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("web: QR code of %q: %w", url, err)
	}
	bits := q.Bitmap()
	n := len(bits)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges">`, n, n)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n)
	for y, row := range bits {
		for x := 0; x < len(row); {
			if !row[x] {
				x++
				continue
			}
			start := x
			for x < len(row) && row[x] {
				x++
			}
			fmt.Fprintf(&b, "M%d %dh%dv1h-%dz", start, y, x-start, x-start)
		}
	}
	b.WriteString(`"/></svg>`)
	return []byte(b.String()), nil
}
