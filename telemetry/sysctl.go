package telemetry

import (
	"encoding/binary"
	"math"
)

// sizeofLoadavg is the size of macOS's struct loadavg { uint32 ldavg[3]; long fscale; }: the
// long is 8-byte aligned, at offset 16.
const sizeofLoadavg = 24

// parseSysctlLoadavg decodes macOS's vm.loadavg (fixed-point values over fscale) in the
// machine's byte order, little-endian on every Mac Go supports. It lives outside the darwin
// build so that its tests run everywhere.
func parseSysctlLoadavg(raw []byte) ([3]float64, bool) {
	var l [3]float64
	if len(raw) != sizeofLoadavg {
		return l, false
	}
	scale := binary.LittleEndian.Uint64(raw[16:])
	if scale == 0 {
		return l, false
	}
	for i := range l {
		v := float64(binary.LittleEndian.Uint32(raw[4*i:])) / float64(scale)
		l[i] = math.Round(v*100) / 100 // two decimals, as /proc/loadavg gives them
	}
	return l, true
}
