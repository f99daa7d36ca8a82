//go:build unix && !linux

package proto

import "syscall"

// DrainSignal is Linux's realtime signal (see drain_linux.go); other
// systems have none to spare: their lame-duck period serves without the
// workers knowing.
const DrainSignal = syscall.Signal(0)

// HasDrainSignal reports whether this system has DrainSignal.
const HasDrainSignal = false
