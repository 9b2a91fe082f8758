package web

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
)

// themeColor is the page's and the app icon's colour (the manifest's theme_color).
const themeColor = "#0f766e"

var iconBackground = color.NRGBA{0x0f, 0x76, 0x6e, 0xff} // themeColor

// iconPNG draws the app icon, size×size pixels: a power symbol in white on the theme colour.
// The square is full-bleed and the symbol stays inside the central circle of 40 % radius, so the
// same picture serves as a "maskable" icon (Android crops it to its own shape) and as the
// apple-touch-icon (iOS rounds the corners itself). Drawn from signed distances, so the edges
// are smooth at any size without a drawing library or a committed binary.
func iconPNG(size int) ([]byte, error) {
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	const (
		cx, cy = 0.5, 0.54 // ring centre
		radius = 0.23      // ring radius
		half   = 0.045     // half the stroke width
		gap    = 40 * math.Pi / 180
	)
	// The ring's ends, either side of its top.
	ex, ey := radius*math.Sin(gap), -radius*math.Cos(gap)
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			u := (float64(x) + 0.5) / float64(size)
			v := (float64(y) + 0.5) / float64(size)
			dx, dy := u-cx, v-cy
			// The arc: a ring with a gap of ±gap around its top, with round ends.
			var arc float64
			if math.Abs(math.Atan2(dx, -dy)) > gap {
				arc = math.Abs(math.Hypot(dx, dy)-radius) - half
			} else {
				arc = math.Min(math.Hypot(dx-ex, dy-ey), math.Hypot(dx+ex, dy-ey)) - half
			}
			// The bar: a capsule from the top of the gap down to the ring's centre.
			by := math.Min(math.Max(v, 0.2), cy-0.02)
			bar := math.Hypot(u-0.5, v-by) - half
			d := math.Min(arc, bar) * float64(size) // in pixels
			cover := math.Min(math.Max(0.5-d, 0), 1)
			img.SetNRGBA(x, y, mix(iconBackground, color.NRGBA{0xff, 0xff, 0xff, 0xff}, cover))
		}
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// mix blends a towards b by t in [0, 1].
func mix(a, b color.NRGBA, t float64) color.NRGBA {
	m := func(x, y uint8) uint8 { return uint8(math.Round(float64(x) + (float64(y)-float64(x))*t)) }
	return color.NRGBA{m(a.R, b.R), m(a.G, b.G), m(a.B, b.B), 0xff}
}
