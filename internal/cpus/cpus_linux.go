package cpus

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// Available returns the CPUs this process may use: its affinity mask's count,
// lowered to the cgroup CPU quota (rounded up) of the cgroup it is in, or of
// an ancestor within the cgroup mount, if any. Always ≥ 1. What it read, for
// the start log: Source. If sched_getaffinity fails, runtime.NumCPU() stands
// for the affinity mask. It reads the files anew on every call.
func Available() (n int, why Source) {
	var set unix.CPUSet
	err := unix.SchedGetaffinity(0, &set)
	if err != nil {
		n, why = Count("/", runtime.NumCPU())
		return n, why + Source("; sched_getaffinity: "+err.Error()+", used runtime.NumCPU")
	}
	return Count("/", set.Count())
}
