// Package signame spells signals the one way clusterflock's logs, events and
// errors do: the name without its "SIG" prefix ("TERM", "KILL", "TTIN").
package signame

import (
	"os"
	"strings"
	"syscall"
)

// Of returns sig's name without "SIG" ("TERM"), or sig.String() for a
// signal that has no such name.
func Of(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		if name := unixName(s); name != "" {
			return strings.TrimPrefix(name, "SIG")
		}
	}
	return sig.String()
}
