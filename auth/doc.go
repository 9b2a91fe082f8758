// Package auth owns mosquitto-compatible password files: reading them
// (every line mosquitto_passwd writes, $7$ PBKDF2-SHA512 and $6$ SHA-512),
// checking credentials in constant time, and writing them the way
// mosquitto_passwd 2.0 does. It imports none of pimqtt's packages.
package auth
