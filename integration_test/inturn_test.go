//go:build linux

package integration_test

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

// turnMsg is the supervisor's debug record when a leaving worker's turn to
// stop ends (see supervisor.StopInTurn): its attributes name the worker
// and the cause ("closed", "exited", "CloseWait passed").
const turnMsg = "leaving worker's turn to stop over"

// TestStopsInTurn: the workers leaving a pool whose listeners live on (the
// old pool after a binary upgrade, the old workers of a rolling restart
// with RestartSurge 3) are asked to stop one at a time, each once the one
// asked before has closed its listener; in the modes where each worker
// owns its listener, two closing together can make the kernel reset a
// connection it migrates between them.
func TestStopsInTurn(t *testing.T) {
	for _, m := range mechanisms[:2] { // ebpf and sysctl
		t.Run(m.name, func(t *testing.T) {
			m.setup(t)
			t.Run("USR2", func(t *testing.T) {
				p := m.start(t, poolConfig{workers: 3})
				mark := p.mark()
				p.signal(syscall.SIGUSR2)
				newPid := p.waitUpgradeBegin(mark)
				if res := p.upgradeOutcome(mark); res.NewPid != newPid || res.Reason != "done" {
					p.fatalf("upgrade to supervisor %d: %s (new supervisor %d)", newPid, res.Reason, res.NewPid)
				}
				if code, runErr := p.wait(15 * time.Second); code != 0 || runErr != "" {
					p.fatalf("old supervisor after the upgrade: exit code %d, Run error %q; want 0 and nil", code, runErr)
				}
				checkInTurn(t, p, mark, p.pid(), supervisor.ReasonPoolStopping, 3)
			})
			t.Run("HUP-surge3", func(t *testing.T) {
				p := m.start(t, poolConfig{workers: 3, surge: 3})
				old := p.workerPids()
				mark := p.mark()
				p.signal(syscall.SIGHUP)
				p.waitEvent(mark, supervisor.EventRestart, func(e event) bool { return e.Reason == "done" })
				for _, pid := range old {
					p.waitCleanExit(mark, pid)
				}
				checkInTurn(t, p, mark, p.pid(), supervisor.ReasonReplaced, 3)
			})
		})
	}
}

// checkInTurn checks that supervisor sup asked n workers to stop (why)
// from record index from on, each only once the turn of the one before
// had ended, and that at least one turn ended because the worker reported
// its listener closed (all n−1 ending at CloseWait would take each
// worker 100 ms from its SIGTERM to its listener's close).
func checkInTurn(t *testing.T, p *pool, from, sup int, why string, n int) {
	t.Helper()
	p.mu.Lock()
	recs := slices.Clone(p.records[from:])
	p.mu.Unlock()
	var order, causes []string
	on, stops, closed := 0, 0, 0 // the worker whose turn is on
	var first time.Time
	for _, r := range recs {
		at, _ := time.Parse(time.RFC3339Nano, r.str("time"))
		switch r.str("msg") {
		case turnMsg:
			if r.int("worker") != on {
				continue // a worker of another supervisor, or of an earlier stop
			}
			order = append(order, "turn over "+r.str("worker"))
			causes = append(causes, r.str("cause"))
			if r.str("cause") == "closed" {
				closed++
			}
			on = 0
		case eventMsg:
			e := r.event()
			if e.Kind != supervisor.EventStop || e.Supervisor != sup || e.Reason != why {
				continue
			}
			if first.IsZero() {
				first = at
			}
			order = append(order, fmt.Sprintf("stop %d at +%v", e.Worker.ID, at.Sub(first).Round(100*time.Microsecond)))
			if on != 0 {
				p.errorf("worker %d asked to stop while worker %d's turn was on", e.Worker.ID, on)
			}
			on = e.Worker.ID
			stops++
		}
	}
	t.Logf("supervisor %d: %s; turns ended by %s", sup, strings.Join(order, ", "), strings.Join(causes, ", "))
	if stops != n {
		p.errorf("supervisor %d asked %d workers to stop (%s), want %d", sup, stops, why, n)
	}
	if closed == 0 {
		p.errorf("no worker's turn ended with its report that its listener closed (turns ended by %v)", causes)
	}
}
