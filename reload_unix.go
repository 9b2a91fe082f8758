//go:build !windows

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// notifyReload delivers SIGHUP, mosquitto's "re-read the password file".
func notifyReload(c chan<- os.Signal) { signal.Notify(c, syscall.SIGHUP) }
