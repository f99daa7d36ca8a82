//go:build !linux

package cpus

import "runtime"

// Available returns the CPUs this process may use. Outside Linux that is
// runtime.NumCPU(), with Source "not Linux". Always ≥ 1.
func Available() (n int, why Source) {
	return max(runtime.NumCPU(), 1), "not Linux"
}
