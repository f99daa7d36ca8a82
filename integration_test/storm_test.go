//go:build linux

package integration_test

// Signal storms (issue "Reliability proven"): hundreds of TTIN and TTOU and
// dozens of HUP in quick succession, under a load of both kinds, in every
// migration mode the machine offers. Every signal is accounted for (acted on
// or refused, from the events), the pool ends at the size the arithmetic
// says, and no request is lost (mode none: measured only).

import (
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

// stormModes are the migration modes of the storm; each is skipped where
// this machine cannot offer it. net.ipv4.tcp_migrate_req is 0 for all, so
// that only the mode itself moves connections.
var stormModes = []mechanism{
	{name: "ebpf", migration: "ebpf", migrateReq: "0", want: "ebpf"},
	{name: "cbpf", migration: "cbpf", migrateReq: "0", want: "cbpf"},
	{name: "shared", migration: "shared", migrateReq: "0", want: "shared"},
	// Nothing migrates: a retiring worker may reset connections still queued
	// on its listener. Losses are reported, not asserted.
	{name: "none", migration: "none", migrateReq: "0", want: "none", measureOnly: true},
}

func TestSignalStorm(t *testing.T) {
	for _, m := range stormModes {
		t.Run(m.name, func(t *testing.T) {
			m.setup(t)
			testSignalStorm(t, m)
		})
	}
}

func testSignalStorm(t *testing.T, m mechanism) {
	const (
		initial = 2
		ttin    = 100
		ttou    = ttin + initial + 1 // two more than the pool can give up: refused at one worker
		hups    = 30
	)
	p := m.start(t, poolConfig{workers: initial})
	t.Cleanup(func() { saveLog(t, p) })
	tr := startTraffic(t, p.addr, 4, 4, 90*time.Second)
	tr.waitAnswered(200, 10*time.Second)
	s := newSignaller(p)

	// The arithmetic: TTIN adds one, TTOU takes one away but never the last.
	size, floorRefusals := initial, 0
	begin := time.Now()
	for range ttin {
		s.send(syscall.SIGTTIN)
		size++
	}
	ttinTook := time.Since(begin)
	begin = time.Now()
	for range ttou {
		s.send(syscall.SIGTTOU)
		if size > 1 {
			size--
		} else {
			floorRefusals++
		}
	}
	ttouTook := time.Since(begin)
	begin = time.Now()
	for range hups {
		s.send(syscall.SIGHUP)
	}
	hupTook := time.Since(begin)
	t.Logf("sent %d TTIN in %v, %d TTOU in %v, %d HUP in %v, each after the receipt of the previous one",
		ttin, ttinTook.Round(time.Millisecond), ttou, ttouTook.Round(time.Millisecond), hups, hupTook.Round(time.Millisecond))

	// Every rolling restart begun ends.
	isRestart := func(reason string) func(record) bool {
		return func(r record) bool {
			return r.str("msg") == eventMsg && r.str("kind") == string(supervisor.EventRestart) && (r.str("reason") == reason || reason == "" && r.str("reason") != "begin")
		}
	}
	begun := p.countRecords(0, isRestart("begin"))
	if err := p.waitRecords(0, begun, isRestart(""), 30*time.Second); err != nil {
		t.Fatalf("%d rolling restarts begun, not all ended: %v", begun, err)
	}

	s.barrier()
	l := account(p, initial)
	received := s.received()
	want := l.target(initial, received)
	settle := time.Now()
	pids := p.converge(want, 30*time.Second)
	t.Logf("the pool converged to %d workers %v, %v after the last signal", len(pids), pids, time.Since(settle).Round(time.Millisecond))
	tr.halt()
	l = account(p, initial)

	label := "storm, migration " + m.want
	t.Logf("%s: events by kind: %s", label, eventCounts(p.plainEvents()))
	logWarnings(t, p, label)
	l.check(t, label, s.sent, received)
	if len(l.slots) != want {
		t.Errorf("%s: the events leave %d slots in the pool, the signals ask for %d", label, len(l.slots), want)
	}
	// With no refusal but the floor's, the size is the arithmetic's.
	if l.refused["TTIN"] == 0 && l.refused["TTOU"] == floorRefusals {
		if want != size {
			t.Errorf("%s: the pool ends with %d workers, the arithmetic (floor 1) says %d", label, want, size)
		}
	} else {
		t.Errorf("%s: TTIN/TTOU refused for other reasons than the floor (%d TTIN, %d TTOU refused; %d at the floor by the arithmetic)",
			label, l.refused["TTIN"], l.refused["TTOU"], floorRefusals)
	}
	// No worker dies or fails to start in a storm: every exit is asked for.
	if l.unexpected > 0 || l.failedStarts() > 0 {
		t.Errorf("%s: %d workers exited unasked and %d forks failed (reforks without an exit), want none", label, l.unexpected, l.failedStarts())
	}
	for _, e := range p.events(0, supervisor.EventExit) {
		if e.unexpected() {
			t.Logf("%s: worker %d exited unasked: %s (%s)", label, e.Worker.Pid, e.Reason, e.Status)
		}
	}

	r := tally(tr.snapshot())
	t.Logf("%s: load: %v", label, r)
	if r.ok < 1000 {
		t.Errorf("%s: only %d requests answered: too few to prove anything", label, r.ok)
	}
	if r.lost > 0 {
		if m.measureOnly {
			t.Logf("MEASUREMENT, not asserted (migration %s moves no queued connection): %d requests lost: %s", m.want, r.lost, countsString(r.lostBy))
			// A queued connection is reset; a refused one found no
			// listener at all: the pool was not serving.
			if refused := r.lostBy["close, dial: ECONNREFUSED"] + r.lostBy["keep-alive, dial: ECONNREFUSED"]; refused > 0 {
				t.Errorf("%s: %d connections refused: for a while no worker listened", label, refused)
			}
		} else {
			t.Errorf("%s: %d requests lost, want 0: %s", label, r.lost, countsString(r.lostBy))
		}
	}

	p.signal(syscall.SIGTERM)
	if code, err := p.wait(15 * time.Second); code != 0 {
		t.Errorf("%s: after TERM the supervisor exited %d (%q), want 0", label, code, err)
	}
	checkNoOrphans(t, p, 5*time.Second)
}
