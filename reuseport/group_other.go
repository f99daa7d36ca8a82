//go:build !linux

package reuseport

import (
	"errors"
	"os"
	"runtime"
)

var errNoGroup = errors.New("reuseport: steered groups need Linux, not " + runtime.GOOS)

// Group is a steered reuseport group; it needs Linux.
type Group struct{}

// NewGroup fails: steered groups need Linux.
func NewGroup(addr string) (*Group, error) { return nil, errNoGroup }

// AdoptGroup fails: steered groups need Linux.
func AdoptGroup(files []*os.File) (*Group, error) { return nil, errNoGroup }

// Addr returns "".
func (g *Group) Addr() string { return "" }

// Len returns 0.
func (g *Group) Len() int { return 0 }

// Files returns nil.
func (g *Group) Files() []*os.File { return nil }

// Listen fails: steered groups need Linux.
func (g *Group) Listen() (*os.File, error) { return nil, errNoGroup }

// Close closes f.
func (g *Group) Close(f *os.File) error { return f.Close() }

// CloseAll does nothing.
func (g *Group) CloseAll() {}

// Steer fails: steered groups need Linux.
func (g *Group) Steer(to []*os.File) error { return errNoGroup }

// Index returns -1.
func (g *Group) Index(f *os.File) int { return -1 }

// AcceptQueue fails: it needs Linux.
func AcceptQueue(f *os.File) (int, error) { return 0, errNoGroup }

// CheckSteering fails: steered groups need Linux.
func CheckSteering() error { return errNoGroup }
