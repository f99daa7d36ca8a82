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

// TestWithSysmonAwake: Options.KeepSysmonAwake adds schedtrace to GODEBUG,
// keeping the operator's other settings, and leaves a schedtrace the
// environment sets alone.
func TestWithSysmonAwake(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"A=1"}, "GODEBUG=schedtrace=2147483647"},
		{[]string{"GODEBUG="}, "GODEBUG=schedtrace=2147483647"},
		{[]string{"GODEBUG=madvdontneed=1"}, "GODEBUG=madvdontneed=1,schedtrace=2147483647"},
		{[]string{"GODEBUG=schedtrace=1000"}, "GODEBUG=schedtrace=1000"},
		{[]string{"GODEBUG=gctrace=1,schedtrace=5"}, "GODEBUG=gctrace=1,schedtrace=5"},
	} {
		got := withSysmonAwake(tc.env)
		var godebug []string
		for _, kv := range got {
			if strings.HasPrefix(kv, "GODEBUG=") {
				godebug = append(godebug, kv)
			}
		}
		if len(godebug) != 1 || godebug[0] != tc.want {
			t.Errorf("withSysmonAwake(%q) = %q, want one %q", tc.env, got, tc.want)
		}
	}
	if got := workerRuntime([]string{"A=1"}, Config{}); len(got) != 1 {
		t.Errorf("KeepSysmonAwake off added %v", got)
	}
}
