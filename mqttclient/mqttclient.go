// Package mqttclient holds what pimqtt's MQTT clients (the device, the control page and the
// bridge) share on top of paho. It imports none of pimqtt's packages.
package mqttclient

import "github.com/eclipse/paho.mqtt.golang/packets"

// DiscardStore is a paho Store that keeps nothing. pimqtt's clients start every connection
// afresh and resend what matters themselves (the device its states, the bridge its queue;
// the page never resends a command, which would surprise whoever looks at it now), so paho's
// own resending of stored messages across connections would only duplicate or delay.
type DiscardStore struct{}

// Open does nothing.
func (DiscardStore) Open() {}

// Put keeps nothing.
func (DiscardStore) Put(string, packets.ControlPacket) {}

// Get finds nothing.
func (DiscardStore) Get(string) packets.ControlPacket { return nil }

// All lists nothing.
func (DiscardStore) All() []string { return nil }

// Del does nothing.
func (DiscardStore) Del(string) {}

// Close does nothing.
func (DiscardStore) Close() {}

// Reset does nothing.
func (DiscardStore) Reset() {}
