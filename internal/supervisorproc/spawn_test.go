//go:build unix

package supervisorproc

import (
	"strings"
	"testing"
)

func TestWorkerEnviron(t *testing.T) {
	base := []string{"A=1", "CLUSTERFLOCK_WORKER=1:2:3:x", "B=2"}
	got := workerEnviron(base, 0, 2)
	want := "GOMAXPROCS="
	if strings.Contains(strings.Join(got, " "), "CLUSTERFLOCK_WORKER") || !strings.HasPrefix(got[len(got)-1], want) {
		t.Errorf("workerEnviron = %v: want the marker removed and GOMAXPROCS added", got)
	}
	got = workerEnviron(append(base, "GOMAXPROCS=7"), 0, 2)
	if got[len(got)-1] != "GOMAXPROCS=7" {
		t.Errorf("an explicit GOMAXPROCS was not kept: %v", got)
	}
	got = workerEnviron(append(base, "GOMAXPROCS=7"), 3, 2)
	if j := strings.Join(got, " "); !strings.Contains(j, "GOMAXPROCS=3") || strings.Contains(j, "GOMAXPROCS=7") {
		t.Errorf("Options.GOMAXPROCS did not win: %v", got)
	}
}
