//go:build !unix

package signame

import "syscall"

func unixName(s syscall.Signal) string { return "" }
