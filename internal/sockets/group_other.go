//go:build unix && !linux

package sockets

import (
	"errors"
	"runtime"
	"time"
)

var errNoGroup = errors.New("reuseport: steered groups need Linux, not " + runtime.GOOS)

// Group is a steered reuseport group; it needs Linux.
type Group struct{}

// NewGroup fails: steered groups need Linux.
func NewGroup(addr string) (*Group, error) { return nil, errNoGroup }

// AdoptGroup fails: steered groups need Linux.
func AdoptGroup(socks []*Socket) (*Group, error) { return nil, errNoGroup }

// Addr returns "".
func (g *Group) Addr() string { return "" }

// Len returns 0.
func (g *Group) Len() int { return 0 }

// Sockets returns nil.
func (g *Group) Sockets() []*Socket { return nil }

// Listen fails: steered groups need Linux.
func (g *Group) Listen() (*Socket, error) { return nil, errNoGroup }

// Close closes f.
func (g *Group) Close(f *Socket) error { return f.Close() }

// CloseAll does nothing.
func (g *Group) CloseAll() {}

// Steer fails: steered groups need Linux.
func (g *Group) Steer(to []*Socket) error { return errNoGroup }

// Index returns -1.
func (g *Group) Index(f *Socket) int { return -1 }

// AcceptQueue fails: it needs Linux.
func (s *Socket) AcceptQueue() (int, error) { return 0, errNoGroup }

// ErrNotQuiet is returned by WaitQuiet: it needs Linux.
var ErrNotQuiet = errors.New("reuseport: the socket still receives connections")

// WaitQuiet returns ErrNotQuiet at once: it needs Linux.
func (s *Socket) WaitQuiet(limit time.Duration, stop <-chan struct{}) error { return ErrNotQuiet }

// ErrStillHeld is returned by Close of a socket another process holds.
var ErrStillHeld = errors.New("reuseport: the closed socket is still held by another process")

// Held returns 0.
func (g *Group) Held() int { return 0 }

// Verify fails: steered groups need Linux.
func (g *Group) Verify() error { return errNoGroup }

// CheckSteering fails: steered groups need Linux.
func CheckSteering() error { return errNoGroup }
