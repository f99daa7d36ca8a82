//go:build !unix

package reuseport

import "errors"

func dupCloexec(fd int) (int, error) { return -1, errors.New("not supported on this system") }
