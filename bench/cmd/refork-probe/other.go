//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The probe needs Linux: pidfds, the process-events connector,
// CLOCK_MONOTONIC stamps across processes.
func main() {
	fmt.Fprintln(os.Stderr, "refork-probe: Linux only")
	os.Exit(2)
}
