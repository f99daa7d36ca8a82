//go:build linux

package integration_test

// Issue 21, items 8 and 9: a pool's size survives a binary upgrade in every
// migration mode, and a control client that half-closes its connection
// after its request (socat, nc -N) hears the real outcome.

import (
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

// sizeMechanisms are the migration modes a scaled pool is upgraded in: the
// storm's (root, net.ipv4.tcp_migrate_req 0) and the sysctl; the subtests
// of those this machine does not offer skip, saying why.
var sizeMechanisms = append(slices.Clone(stormModes), mechanism{name: "sysctl", migration: "sysctl", migrateReq: "1", want: "sysctl"})

// TestUpgradeKeepsScale: a pool scaled with TTIN (2 → 3 workers), or with
// TTOU (3 → 2), then upgraded with USR2, is as large after the upgrade as
// before, whatever the new supervisor's Options.Workers; the new
// supervisor's start line says where its size came from, and every one of
// its workers serves.
func TestUpgradeKeepsScale(t *testing.T) {
	for _, m := range sizeMechanisms {
		t.Run(m.name, func(t *testing.T) {
			m.setup(t)
			t.Run("TTIN", func(t *testing.T) { upgradeScaled(t, m, 2, syscall.SIGTTIN) })
			t.Run("TTOU", func(t *testing.T) { upgradeScaled(t, m, 3, syscall.SIGTTOU) })
		})
	}
}

// upgradeScaled starts a pool of workers (its Options.Workers, also the new
// supervisor's), scales it by one with sig, upgrades it and checks the new
// pool's size.
func upgradeScaled(t *testing.T, m mechanism, workers int, sig syscall.Signal) {
	p := m.start(t, poolConfig{workers: workers})
	want := workers + 1
	mark := p.mark()
	p.signal(sig)
	if sig == syscall.SIGTTIN {
		p.waitEvent(mark, supervisor.EventPoolReady, func(e event) bool { return e.Pool == want })
	} else {
		want = workers - 1
		stop := p.waitEvent(mark, supervisor.EventStop, func(e event) bool { return e.Reason == supervisor.ReasonRetired })
		p.waitCleanExit(mark, stop.Worker.Pid) // USR2 waits for a cbpf slot's drain
	}
	mark = p.mark()
	p.signal(syscall.SIGUSR2)
	newPid := p.waitUpgradeBegin(mark)
	if res := p.upgradeOutcome(mark); res.NewPid != newPid || res.Reason != "done" {
		t.Fatalf("upgrade to supervisor %d: %s (new supervisor %d)", newPid, res.Reason, res.NewPid)
	}
	start := p.waitFor("supervisor starting", func(r record) bool { return r.int("pid") == newPid }, time.Second)
	checkStart(t, start, m)
	if start.int("workers") != want || start.str("workers_from") != "upgrade" || start.int("options_workers") != workers {
		t.Errorf("new supervisor %d starts with workers=%s workers_from=%q options_workers=%s; want %d from %q, Options.Workers %d",
			newPid, start.str("workers"), start.str("workers_from"), start.str("options_workers"), want, "upgrade", workers)
	}
	ready := p.waitEvent(mark, supervisor.EventPoolReady, func(e event) bool { return e.Supervisor == newPid })
	if ready.Pool != want {
		t.Errorf("the new supervisor %d is ready with %d workers, want the old pool's %d (Options.Workers is %d)", newPid, ready.Pool, want, workers)
	}
	if code, runErr := p.wait(15 * time.Second); code != 0 || runErr != "" {
		t.Fatalf("old supervisor after the upgrade: exit code %d, Run error %q", code, runErr)
	}
	children := childrenOf(newPid)
	if len(children) != want {
		t.Fatalf("the new supervisor %d has children %v, want %d workers", newPid, children, want)
	}
	seen := p.pidsServing(want, 10*time.Second)
	for body := range seen {
		if pid, _ := strconv.Atoi(body); !slices.Contains(children, pid) {
			t.Errorf("pid %s answered, which is not a worker of the new supervisor %d %v", body, newPid, children)
		}
	}
	if len(seen) != want {
		t.Errorf("fresh connections reached %d workers of the new pool (%v), want all %d", len(seen), seen, want)
	}
}
