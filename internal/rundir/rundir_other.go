//go:build !unix

package rundir

import (
	"errors"
	"fmt"
	"io/fs"
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

// OtherOwner reports no owner off unix.
func OtherOwner(fi fs.FileInfo) (uint32, bool) { return 0, false }
