package web

import (
	"bytes"
	"flag"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/go-rod/rod"
	"github.com/go-rod/rod/lib/launcher"
	"github.com/go-rod/rod/lib/proto"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// These tests drive the page in a real browser: Debian's chromium (headless), through the
// DevTools protocol with go-rod. A machine without chromium fails them; .ci/test installs it.

var update = flag.Bool("update", false, "rewrite docs/page.png from TestScreenshot")

// screenshotPath is the README's picture of the page, relative to this package.
const screenshotPath = "../docs/page.png"

// phone is the viewport of a mid-size phone (an iPhone 12 to 15), in CSS pixels.
var phone = proto.EmulationSetDeviceMetricsOverride{Width: 390, Height: 844, DeviceScaleFactor: 1, Mobile: true}

// newBrowser starts headless chromium with a fresh profile and connects to it; both end with
// the test.
func newBrowser(t *testing.T) *rod.Browser {
	t.Helper()
	bin := mqtttest.RequireTool(t, "chromium", "chromium")
	chromeLog := &mqtttest.SyncBuffer{}
	l := launcher.New().
		Bin(bin).
		Headless(true).
		NoSandbox(true). // tests run as root, where chromium's sandbox refuses to start
		Leakless(false). // no helper binary unpacked into /tmp; the cleanup below kills chromium
		UserDataDir(t.TempDir()).
		Set("disable-gpu").
		Set("disable-quic").
		Set("no-first-run").
		Set("disable-background-networking").
		Set("disable-component-update").
		Set("disable-sync").
		Logger(chromeLog)
	u, err := l.Launch()
	if err != nil {
		t.Fatalf("start chromium: %v\n%s", err, chromeLog.String())
	}
	b := rod.New().ControlURL(u)
	if err := b.Connect(); err != nil {
		l.Kill()
		t.Fatalf("connect to chromium: %v", err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		l.Kill()
		if t.Failed() {
			t.Logf("chromium's output:\n%s", chromeLog.String())
		}
	})
	return b
}

// openPage opens url in a new incognito context (its own cookies, as another phone) at phone
// size, in the light colour scheme unless dark.
func openPage(t *testing.T, b *rod.Browser, url string, dark bool) *rod.Page {
	t.Helper()
	ctx, err := b.Incognito()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ctx.Page(proto.TargetCreateTarget{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.SetViewport(&phone); err != nil {
		t.Fatal(err)
	}
	scheme := "light"
	if dark {
		scheme = "dark"
	}
	if err := (proto.EmulationSetEmulatedMedia{Features: []*proto.EmulationMediaFeature{{Name: "prefers-color-scheme", Value: scheme}}}).Call(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Navigate(url); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitLoad(); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitDOM waits until the JavaScript expression cond holds in the page, re-checking on every DOM
// mutation (a MutationObserver, no polling), for at most limit.
func waitDOM(t *testing.T, p *rod.Page, limit time.Duration, cond string) {
	t.Helper()
	js := fmt.Sprintf(`() => new Promise(resolve => {
		const ok = () => { try { return !!(%s); } catch (e) { return false; } };
		if (ok()) { resolve(true); return; }
		const o = new MutationObserver(() => { if (ok()) { o.disconnect(); resolve(true); } });
		o.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
	})`, cond)
	if _, err := p.Timeout(limit).Evaluate(rod.Eval(js).ByPromise()); err != nil {
		t.Fatalf("waiting for %s: %v\npage: %s", cond, err, pageText(p))
	}
}

// pageText is what the page shows, for failure messages.
func pageText(p *rod.Page) string {
	res, err := p.Timeout(5 * time.Second).Eval(`() => document.body.innerText`)
	if err != nil {
		return err.Error()
	}
	return res.Value.Str()
}

// element finds selector or fails.
func element(t *testing.T, p *rod.Page, selector string) *rod.Element {
	t.Helper()
	el, err := p.Timeout(waitTimeout).Element(selector)
	if err != nil {
		t.Fatalf("%s: %v\npage: %s", selector, err, pageText(p))
	}
	return el
}

// signIn fills in and sends the sign-in form.
func signIn(t *testing.T, p *rod.Page, user, password string) {
	t.Helper()
	waitDOM(t, p, waitTimeout, `!document.getElementById('login').hidden`)
	if _, err := p.Timeout(waitTimeout).Eval(`() => document.querySelectorAll('#login input').forEach(i => i.value = '')`); err != nil {
		t.Fatal(err)
	}
	if err := element(t, p, "#login input[name=user]").Input(user); err != nil {
		t.Fatal(err)
	}
	if err := element(t, p, "#login input[name=password]").Input(password); err != nil {
		t.Fatal(err)
	}
	if err := element(t, p, "#login button").Click(proto.InputMouseButtonLeft, 1); err != nil {
		t.Fatal(err)
	}
}

const (
	ledSwitch = `document.querySelector('#outputs [data-name="led"] .sw')`
	ledOn     = ledSwitch + `.getAttribute('aria-checked') === 'true'`
	ledOff    = ledSwitch + `.getAttribute('aria-checked') === 'false'`
	banner    = `document.getElementById('banner')`
)

// The page in a real browser, as a phone uses it: a wrong password, signing in, switching the
// LED, a change from another MQTT client shown within a second, a read-only user, and a
// restart of pimqtt's web side that the page rides out by itself.
func TestBrowser(t *testing.T) {
	b := newBrowser(t)
	r := newRig(t, Options{Rights: readOnly{"bob": true}, SessionFile: filepath.Join(t.TempDir(), "sessions.json")})
	alice := openPage(t, b, r.url, false)

	t.Run("wrong password", func(t *testing.T) {
		signIn(t, alice, "alice", "not-the-password")
		waitDOM(t, alice, waitTimeout, `document.getElementById('loginError').textContent.includes('wrong user name or password')`)
		waitDOM(t, alice, waitTimeout, `document.getElementById('app').hidden`)
	})

	t.Run("sign in and switch", func(t *testing.T) {
		signIn(t, alice, "alice", alicePassword)
		waitDOM(t, alice, waitTimeout, ledOff+` && document.getElementById('status').textContent === 'online'`)
		if err := element(t, alice, `#outputs [data-name="led"] .sw`).Click(proto.InputMouseButtonLeft, 1); err != nil {
			t.Fatal(err)
		}
		waitDOM(t, alice, waitTimeout, ledOn)
		// The page shows what the device reported, so the line is already on.
		if v, _ := r.led.Value(); v != 1 {
			t.Fatalf("the page shows on, the line is %d", v)
		}
		waitDOM(t, alice, waitTimeout, `document.querySelector('#events li').textContent.includes('led on') && document.querySelector('#events .by').textContent === 'alice'`)
	})

	t.Run("another client switches off", func(t *testing.T) {
		r.mosquittoPub(ledTopic, "0")
		start := time.Now()
		waitDOM(t, alice, time.Second, ledOff)
		t.Logf("shown off %v after mosquitto_pub returned", time.Since(start).Round(time.Millisecond))
		waitDOM(t, alice, waitTimeout, `document.querySelector('#events .by').textContent === 'MQTT'`)
	})

	t.Run("input", func(t *testing.T) {
		r.mosquittoPub(doorSimTopic, "1")
		waitDOM(t, alice, waitTimeout, `document.querySelector('#inputs [data-name="door"] .led').classList.contains('on')`)
	})

	t.Run("read-only user", func(t *testing.T) {
		bob := openPage(t, b, r.url, false)
		signIn(t, bob, "bob", bobPassword)
		waitDOM(t, bob, waitTimeout, ledSwitch+`.disabled && `+ledOff)
		// A click on the disabled switch does nothing.
		_, _ = bob.Timeout(waitTimeout).Eval(`() => document.querySelector('#outputs [data-name="led"] .sw').click()`)
		if v, _ := r.led.Value(); v != 0 {
			t.Fatal("bob's click switched the line")
		}
		if _, err := bob.Timeout(waitTimeout).Eval(`() => { if (` + ledSwitch + `.disabled !== true) throw new Error('enabled'); }`); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("restart", func(t *testing.T) {
		opts := r.opts
		r.stopWeb()
		waitDOM(t, alice, waitTimeout, `!`+banner+`.hidden && `+banner+`.textContent.includes('reconnecting')`)
		r.mosquittoPub(ledTopic, "1") // while the page's server is away
		r.startWeb(opts)
		waitDOM(t, alice, waitTimeout, ledOn+` && `+banner+`.hidden && !document.getElementById('app').hidden`)
	})

	t.Run("sign out", func(t *testing.T) {
		if err := element(t, alice, "#logout").Click(proto.InputMouseButtonLeft, 1); err != nil {
			t.Fatal(err)
		}
		waitDOM(t, alice, waitTimeout, `!document.getElementById('login').hidden && document.getElementById('app').hidden`)
	})
}

// The dark colour scheme is applied when the phone asks for it.
func TestBrowserDark(t *testing.T) {
	b := newBrowser(t)
	r := newRig(t, Options{Anonymous: true})
	p := openPage(t, b, r.url, true)
	waitDOM(t, p, waitTimeout, `!document.getElementById('app').hidden`)
	waitDOM(t, p, waitTimeout, `getComputedStyle(document.body).backgroundColor === 'rgb(13, 20, 24)'`)
}

// TestScreenshot takes the README's picture of the page at phone size. It always checks the
// picture; with -update it also writes it to docs/page.png:
//
//	go test ./web -run TestScreenshot -update
func TestScreenshot(t *testing.T) {
	b := newBrowser(t)
	r := newRig(t, Options{Title: "raspberrypi", PageURL: "http://192.168.1.20:8080/"})
	r.stopDevice() // the rig's device has one output; the picture shows two outputs
	r.stopWeb()
	r.startDevice("relay1")
	opts := r.opts
	opts.Outputs = []Output{{Name: "led", CommandTopic: ledTopic}, {Name: "relay1", CommandTopic: "raspberry/relay1"}}
	r.startWeb(opts)
	r.mosquittoPub(telemetryTopic, `{"cpu_temp_c": 47.8, "uptime_s": 273600, "load_1m": 0.12, "mem_used_percent": 23.4, "disk_free_bytes": 24696061952, "clients": 3}`, "-r")
	p := openPage(t, b, r.url, false)
	signIn(t, p, "alice", alicePassword)
	waitDOM(t, p, waitTimeout, ledOff)
	if err := element(t, p, `#outputs [data-name="led"] .sw`).Click(proto.InputMouseButtonLeft, 1); err != nil {
		t.Fatal(err)
	}
	waitDOM(t, p, waitTimeout, ledOn)
	r.mosquittoPub(doorSimTopic, "1")
	waitDOM(t, p, waitTimeout, `document.querySelectorAll('#events li').length >= 2 && !document.getElementById('telSec').hidden`)
	shot, err := p.Screenshot(false, &proto.PageCaptureScreenshot{Format: proto.PageCaptureScreenshotFormatPng})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(shot))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width != phone.Width || cfg.Height != phone.Height {
		t.Fatalf("screenshot %dx%d, want %dx%d", cfg.Width, cfg.Height, phone.Width, phone.Height)
	}
	if !*update {
		return
	}
	if err := os.WriteFile(screenshotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%s bytes)", screenshotPath, strconv.Itoa(len(shot)))
}
