//go:build !linux

package gpio

import (
	"errors"
	"strings"
	"testing"
)

func benchKernelLine(b *testing.B) { b.Skip("kernel GPIO lines need Linux") }

func benchKernelEdge(b *testing.B) { b.Skip("kernel GPIO lines need Linux") }

func TestOpenInputNeedsLinux(t *testing.T) {
	logger, _ := testLogger(t)
	for _, spec := range []string{"GPIO17", "pin11", "gpiochip0:17"} {
		_, err := OpenInput(spec, WithLogger(logger))
		if err == nil || !errors.Is(err, errNeedLinux) || !errors.Is(err, ErrNoChip) || !strings.HasSuffix(err.Error(), `; use the line spec "sim" to simulate one`) {
			t.Errorf("OpenInput(%q) error %v, want one saying GPIO needs Linux", spec, err)
		}
	}
	in, err := OpenInput("sim:B", WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, ok := in.(*SimInput); !ok {
		t.Errorf("sim:B gave %T, want *SimInput", in)
	}
}

func TestOpenOutputNeedsLinux(t *testing.T) {
	logger, logs := testLogger(t)
	for _, spec := range []string{"GPIO21", "pin40", "gpiochip0:21"} {
		_, err := OpenOutput(spec, WithLogger(logger))
		if err == nil || !errors.Is(err, errNeedLinux) || !errors.Is(err, ErrNoChip) || !strings.HasSuffix(err.Error(), `; use the line spec "sim" to simulate one`) {
			t.Errorf("OpenOutput(%q) error %v, want one saying GPIO needs Linux", spec, err)
		}
	}
	out, err := OpenOutput("auto", WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, ok := out.(*Sim); !ok {
		t.Errorf("auto gave %T, want *Sim", out)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="no GPIO chip has line GPIO21; using a simulated line"`) {
		t.Errorf("no warning for auto:\n%s", logs)
	}
	if err := ListLines(&strings.Builder{}); !errors.Is(err, ErrNoChip) || !strings.Contains(err.Error(), `"sim"`) {
		t.Errorf("ListLines off Linux: %v, want ErrNoChip and the sim advice", err)
	}
}
