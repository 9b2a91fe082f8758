package web

import "testing"

// pageBudget is the most the page's own HTML, CSS and JS may weigh, gzipped: a phone on a weak
// Wi-Fi link shows it at once (ESPHome's first page is under 1 KB of JS; MQTT.js alone would be
// about 105 KB).
const pageBudget = 5 * 1024

func TestPageSize(t *testing.T) {
	a, err := newAssets("pimqtt")
	if err != nil {
		t.Fatal(err)
	}
	plain, gz := a.pageSize()
	t.Logf("page (HTML+CSS+JS): %d bytes, %d gzipped", plain, gz)
	if gz > pageBudget {
		t.Fatalf("page is %d bytes gzipped, over the %d budget", gz, pageBudget)
	}
}
