//go:build windows

package main

import "os"

// notifyReload does nothing: Windows has no SIGHUP.
func notifyReload(chan<- os.Signal) {}
