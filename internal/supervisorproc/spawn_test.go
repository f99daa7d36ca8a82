//go:build unix

package supervisorproc

import (
	"strings"
	"testing"
)

func TestWorkerEnviron(t *testing.T) {
	base := []string{"A=1", "CLUSTERFLOCK_WORKER=1:2:3:x", "B=2"}
	got := workerEnviron(base, 0, 2, 0)
	want := "GOMAXPROCS="
	if strings.Contains(strings.Join(got, " "), "CLUSTERFLOCK_WORKER") || !strings.HasPrefix(got[len(got)-1], want) {
		t.Errorf("workerEnviron = %v: want the marker removed and GOMAXPROCS added", got)
	}
	got = workerEnviron(append(base, "GOMAXPROCS=7"), 0, 2, 0)
	if got[len(got)-1] != "GOMAXPROCS=7" {
		t.Errorf("an explicit GOMAXPROCS was not kept: %v", got)
	}
	got = workerEnviron(append(base, "GOMAXPROCS=7"), 3, 2, 0)
	if j := strings.Join(got, " "); !strings.Contains(j, "GOMAXPROCS=3") || strings.Contains(j, "GOMAXPROCS=7") {
		t.Errorf("Options.GOMAXPROCS did not win: %v", got)
	}
	// 6 usable CPUs (a cgroup quota, say) over 2 workers: 3 each.
	if got = workerEnviron(base, 0, 2, 6); got[len(got)-1] != "GOMAXPROCS=3" {
		t.Errorf("6 CPUs, 2 workers: %v, want GOMAXPROCS=3", got)
	}
}

// TestWithMemoryLimit: GOMEMLIMIT follows Options.MemoryLimit unless the
// environment sets one.
func TestWithMemoryLimit(t *testing.T) {
	if got := withMemoryLimit([]string{"A=1"}, 1<<20); got[len(got)-1] != "GOMEMLIMIT=1048576" {
		t.Errorf("withMemoryLimit = %v", got)
	}
	if got := withMemoryLimit([]string{"GOMEMLIMIT=5MiB"}, 1<<20); len(got) != 1 {
		t.Errorf("an explicit GOMEMLIMIT was not kept: %v", got)
	}
	if got := withMemoryLimit([]string{"A=1"}, 0); len(got) != 1 {
		t.Errorf("MemoryLimit 0 added %v", got)
	}
}
