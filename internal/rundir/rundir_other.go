//go:build !unix

package rundir

import (
	"errors"
	"fmt"
)

// Open is not supported off unix: a pool runs only there.
func Open(path string, repair bool) (*Dir, error) {
	return nil, fmt.Errorf("clusterflock: runtime directory %s: %w", path, errors.ErrUnsupported)
}

// Check is not supported off unix.
func Check(path string) error {
	return fmt.Errorf("clusterflock: runtime directory %s: %w", path, errors.ErrUnsupported)
}

// Create is not supported off unix.
func (d *Dir) Create(name string, body []byte) (string, error) {
	return "", errors.ErrUnsupported
}

// Close does nothing off unix.
func (d *Dir) Close() error { return nil }
