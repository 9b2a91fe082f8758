package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"strings"
	"sync"
)

// static holds the page: hand-written HTML, CSS and JS, no build step.
//
//go:embed static
var static embed.FS

// titleMarker in index.html is replaced by the page's title.
const titleMarker = "{{title}}"

// asset is one file the server sends, with its gzipped form when that is smaller.
type asset struct {
	body  []byte
	gz    []byte // nil: not worth compressing
	ctype string
	etag  string
}

func newAsset(body []byte, ctype string, compress bool) *asset {
	sum := sha256.Sum256(body)
	a := &asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	if compress {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // the level is valid
		_, _ = zw.Write(body)                                    // a bytes.Buffer does not fail
		_ = zw.Close()
		if buf.Len() < len(body) {
			a.gz = buf.Bytes()
		}
	}
	return a
}

// serve sends a, gzipped when the client takes it; a matching If-None-Match gets 304. Cached
// copies are always revalidated, so a new pimqtt's page is used at once.
func (a *asset) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	if a.gz != nil {
		h.Set("Vary", "Accept-Encoding")
	}
	if r.Header.Get("If-None-Match") == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gz != nil && acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	h.Set("Content-Length", fmt.Sprint(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// assets are the page's files by URL path. Icons are drawn on first use: the 512-pixel one
// takes a moment on a Pi Zero, and many servers never need them.
type assets struct {
	files map[string]*asset
	icons map[string]func() (*asset, error)
}

// iconSizes maps the icon paths to their sizes: the manifest's two, and the apple-touch-icon
// (180 px, what iOS asks for). /favicon.ico gets the small one too: browsers ask for it whatever
// the page says, and take a PNG there.
var iconSizes = map[string]int{
	"/icon-192.png":         192,
	"/icon-512.png":         512,
	"/apple-touch-icon.png": 180,
	"/favicon.ico":          192,
}

func newAssets(title string) (*assets, error) {
	a := &assets{files: map[string]*asset{}, icons: map[string]func() (*asset, error){}}
	for name, ctype := range map[string]string{
		"index.html": "text/html; charset=utf-8",
		"app.js":     "text/javascript; charset=utf-8",
		"app.css":    "text/css; charset=utf-8",
	} {
		body, err := static.ReadFile("static/" + name)
		if err != nil {
			return nil, fmt.Errorf("web: embedded %s: %w", name, err)
		}
		body = compact(body, strings.HasSuffix(name, ".js"))
		if name == "index.html" {
			body = bytes.ReplaceAll(body, []byte(titleMarker), []byte(html.EscapeString(title)))
			name = ""
		}
		a.files["/"+name] = newAsset(body, ctype, true)
	}
	manifest, err := json.Marshal(map[string]any{
		"name":             title,
		"short_name":       title,
		"id":               "/",
		"start_url":        "/",
		"scope":            "/",
		"display":          "standalone",
		"theme_color":      themeColor,
		"background_color": themeColor,
		"icons": []map[string]string{
			{"src": "/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
			{"src": "/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
			{"src": "/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "maskable"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("web: manifest: %w", err)
	}
	a.files["/manifest.webmanifest"] = newAsset(manifest, "application/manifest+json", true)
	drawn := map[int]func() (*asset, error){}
	for path, size := range iconSizes {
		if drawn[size] == nil {
			drawn[size] = sync.OnceValues(func() (*asset, error) {
				png, err := iconPNG(size)
				if err != nil {
					return nil, fmt.Errorf("web: draw the %d px icon: %w", size, err)
				}
				return newAsset(png, "image/png", false), nil
			})
		}
		a.icons[path] = drawn[size]
	}
	return a, nil
}

// compact drops what the browser does not need from the hand-written files: indentation, and in
// script the lines that are only a comment. The files are written so that this is safe (no
// multi-line strings, no line of a string or regular expression starting with //); a phone then
// loads about a fifth less.
func compact(src []byte, script bool) []byte {
	var out []byte
	for _, line := range bytes.Split(src, []byte("\n")) {
		line = bytes.TrimLeft(line, " \t")
		if len(line) == 0 || (script && bytes.HasPrefix(line, []byte("//"))) {
			continue
		}
		out = append(append(out, line...), '\n')
	}
	return out
}

// pageSize returns the page's own HTML, CSS and JS in bytes, plain and gzipped.
func (a *assets) pageSize() (plain, gzipped int) {
	for _, p := range []string{"/", "/app.js", "/app.css"} {
		f := a.files[p]
		plain += len(f.body)
		if f.gz != nil {
			gzipped += len(f.gz)
		} else {
			gzipped += len(f.body)
		}
	}
	return plain, gzipped
}
