package integration_test

import (
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
