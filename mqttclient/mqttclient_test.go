package mqttclient

import (
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// TestDiscardStoreKeepsNothing: what is put is never given back, so paho resends nothing.
func TestDiscardStoreKeepsNothing(t *testing.T) {
	var s mqtt.Store = DiscardStore{}
	s.Open()
	pk := packets.NewControlPacket(packets.Publish)
	s.Put("o.1", pk)
	if got := s.Get("o.1"); got != nil {
		t.Errorf("Get after Put = %v, want nil", got)
	}
	if got := s.All(); len(got) != 0 {
		t.Errorf("All = %v, want none", got)
	}
	s.Del("o.1")
	s.Reset()
	s.Close()
}
