//go:build linux

package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKeepSysmonAwake: with Options.KeepSysmonAwake every worker runs with
// schedtrace added to the operator's GODEBUG (whose settings stay), and
// serves.
func TestKeepSysmonAwake(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2, shutdown: 2 * time.Second,
		env: []string{envSysmon + "=1", "GODEBUG=madvdontneed=1"}})
	if seen := p.pidsServing(2, 5*time.Second); len(seen) != 2 {
		t.Errorf("workers serving: %v, want 2", seen)
	}
	const want = "madvdontneed=1,schedtrace=2147483647"
	for range 20 {
		if got, err := p.get("/getenv?k=GODEBUG"); err != nil || got != want {
			t.Fatalf("a worker's GODEBUG is %q (%v), want %q", got, err, want)
		}
	}
}

// TestWorkersNamedAsSupervisor: workers, executed through the pinned
// image's descriptor, carry the supervisor's command name (in every
// thread), not the descriptor's number, so ps, top and pkill see the
// program's name.
func TestWorkersNamedAsSupervisor(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2})
	p.waitChildren(2, 10*time.Second)
	want := comm(t, fmt.Sprintf("/proc/%d/comm", p.pid()))
	for _, pid := range p.workerPids() {
		threads, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/comm", pid))
		if len(threads) == 0 {
			t.Fatalf("worker %d has no threads in /proc", pid)
		}
		for _, th := range threads {
			if got := comm(t, th); got != want {
				t.Errorf("%s = %q, want the supervisor's %q", th, got, want)
			}
		}
	}
}

func comm(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
