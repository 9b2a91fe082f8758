// Package broker owns the embedded MQTT server: a Mochi broker with
// mosquitto-compatible password-file authentication, TCP and WebSocket
// listeners that fail loudly when they cannot bind, and an in-memory
// listener through which the in-process device connects without a port or
// a password on disk. The device never imports this package: the two meet
// only through MQTT.
package broker
