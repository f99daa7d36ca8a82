//go:build !linux

package sockets

import (
	"fmt"
	"runtime"
)

// Reservation holds a TCP address for a pool (Linux only).
type Reservation struct{}

// Reserve fails off Linux, where SO_REUSEPORT does not balance connections.
func Reserve(addr string) (*Reservation, error) {
	return nil, fmt.Errorf("reserving %s: kernel-balanced SO_REUSEPORT needs Linux, not %s", addr, runtime.GOOS)
}

// Addr returns "".
func (r *Reservation) Addr() string { return "" }

// Close does nothing.
func (r *Reservation) Close() error { return nil }

// CheckFree does nothing off Linux.
func (r *Reservation) CheckFree() error { return nil }
