//go:build linux

package integration_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestWorkersFollowUsableCPUs: Workers 0 is the CPUs the pool may use: a
// cgroup CPU quota of one CPU, or an affinity of one CPU, makes one worker
// with GOMAXPROCS 1, on a machine with more.
func TestWorkersFollowUsableCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("SKIP: needs 2 CPUs or more to tell a limit from the machine")
	}
	t.Run("cgroup quota", func(t *testing.T) {
		procs := quotaCgroup(t)
		p := startPool(t, poolConfig{defaultWorkers: true,
			shell: fmt.Sprintf(`echo $$ > %s && exec "$0" "$@"`, procs)})
		checkOneWorker(t, p, "cgroup")
	})
	t.Run("affinity", func(t *testing.T) {
		if _, err := exec.LookPath("taskset"); err != nil {
			t.Skip("SKIP: no taskset")
		}
		p := startPool(t, poolConfig{defaultWorkers: true, shell: `exec taskset -c 0 "$0" "$@"`})
		checkOneWorker(t, p, "affinity")
	})
}

func checkOneWorker(t *testing.T, p *pool, from string) {
	t.Helper()
	start := p.waitFor("supervisor starting", nil, time.Second)
	if start.int("workers") != 1 || start.int("cpus") != 1 || !strings.Contains(start.str("cpus_from"), from) {
		t.Errorf("started with %s workers, cpus %s from %q; want 1 from %s", start.str("workers"), start.str("cpus"), start.str("cpus_from"), from)
	}
	if got, err := p.get("/getenv?k=GOMAXPROCS"); err != nil || got != "1" {
		t.Errorf("a worker's GOMAXPROCS is %q (%v), want 1", got, err)
	}
}

// quotaCgroup makes a cgroup limited to one CPU (v2 cpu.max, or v1
// cpu.cfs_quota_us), removed at the end of the test, and returns its
// cgroup.procs; it skips the test where this process may not.
func quotaCgroup(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("clusterflock-test-%d", os.Getpid())
	var dir string
	var files map[string]string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		dir, files = filepath.Join("/sys/fs/cgroup", name), map[string]string{"cpu.max": "100000 100000"}
	} else {
		dir, files = filepath.Join("/sys/fs/cgroup/cpu", name), map[string]string{"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("SKIP: cannot make a cgroup: %v", err)
	}
	t.Cleanup(func() { // after the pool's own cleanup: its processes are gone
		deadline := time.Now().Add(5 * time.Second)
		for os.Remove(dir) != nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // the last process is being reaped; bounded
		}
	})
	for f, v := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			t.Skipf("SKIP: cannot set %s: %v", f, err)
		}
	}
	return filepath.Join(dir, "cgroup.procs")
}
