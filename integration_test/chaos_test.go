//go:build linux

package integration_test

// Chaos under load (issue "Reliability proven"): a seeded random sequence of
// TTIN, TTOU, HUP, SIGKILL of a worker and SIGSTOP of a worker, one every
// 0.3–1 s, under a closed-loop load of new connections and keep-alive ones
// at once, with migration ebpf and cbpf. Invariants: a request fails only
// in the window of a SIGKILL or SIGSTOP of a worker (or of the supervisor's
// kill of one), from the blow until the worker's slot serves again; every
// signal is acted on or refused and the pool converges to the size asked
// for; the supervisor's descriptors come back to their baseline and its
// threads about; no zombie child lingers; TERM exits 0 and leaves no
// orphan.
//
//	CF_CHAOS=1 go test -race -run TestChaos -v ./integration_test/
//	CF_CHAOS_SEED=<seed> replays a sequence; CF_CHAOS_DURATION=20s per mode.

import (
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

const (
	chaosWorkers   = 3
	chaosMaxSize   = 6 // TTIN becomes TTOU once the size asked for reaches this
	chaosHeartbeat = time.Second
	// chaosMargin: how long after a blown worker's slot serves again (or it
	// exited, if the slot left) a request may still fail because of it.
	chaosMargin = time.Second
	// chaosThreadSlack: the Go runtime keeps the threads it made for
	// blocking system calls (forks, waits) and never ends them, so the
	// count after chaos is the peak of concurrent blocking calls, not a
	// leak (measured: 4–6 above the start; TestLongLife: 10 → 10 threads
	// over 2,000 reforks).
	chaosThreadSlack = 10
	// chaosZombie: a child may stay unreaped this long (the supervisor reaps
	// each worker at once, but this machine may be busy).
	chaosZombie = 5 * time.Second
)

var chaosModes = []mechanism{
	{name: "ebpf", migration: "ebpf", migrateReq: "0", want: "ebpf"},
	{name: "cbpf", migration: "cbpf", migrateReq: "0", want: "cbpf"},
}

func TestChaos(t *testing.T) {
	if os.Getenv("CF_CHAOS") != "1" {
		t.Skip("SKIP: chaos under load runs with CF_CHAOS=1 (about 45 s)")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CF_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CF_CHAOS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	duration := 20 * time.Second
	if s := os.Getenv("CF_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CF_CHAOS_DURATION=%q: %v", s, err)
		}
		duration = d
	}
	t.Logf("chaos seed %d (replay with CF_CHAOS_SEED=%d), %v per mode", seed, seed, duration)
	for i, m := range chaosModes {
		t.Run(m.name, func(t *testing.T) {
			m.setup(t)
			testChaos(t, m, seed+uint64(i), duration)
		})
	}
}

// blow is something that may fail the requests a worker holds: the test's
// SIGKILL or SIGSTOP of it, or the supervisor's SIGKILL (a missed heartbeat,
// a stop timeout).
type blow struct {
	at   time.Time
	pid  int
	what string
}

// windows knows when each blown worker's requests may fail.
type windows struct {
	blows []blow
	exit  map[int]time.Time   // pid → its exit event
	slot  map[int]int         // pid → its slot
	ready map[int][]time.Time // slot → its ready events
}

func newWindows(blows []blow, evs []timedEvent) *windows {
	w := &windows{blows: blows, exit: map[int]time.Time{}, slot: map[int]int{}, ready: map[int][]time.Time{}}
	for _, e := range evs {
		switch e.Kind {
		case supervisor.EventSpawn:
			w.slot[e.Worker.Pid] = e.Worker.Slot
		case supervisor.EventReady:
			w.ready[e.Worker.Slot] = append(w.ready[e.Worker.Slot], e.at)
		case supervisor.EventExit:
			if _, ok := w.exit[e.Worker.Pid]; !ok {
				w.exit[e.Worker.Pid] = e.at
			}
		case supervisor.EventKill:
			w.blows = append(w.blows, blow{at: e.at, pid: e.Worker.Pid, what: "supervisor kill (" + e.Reason + ")"})
		}
	}
	return w
}

// end returns when b's window closes: once its worker has exited and its
// slot has a ready worker again (just the exit if the slot left the pool),
// plus chaosMargin; ok is false while that is not known yet.
func (w *windows) end(b blow) (time.Time, bool) {
	exit, ok := w.exit[b.pid]
	if !ok {
		return time.Time{}, false
	}
	end := exit
	if slot, ok := w.slot[b.pid]; ok {
		i, _ := slices.BinarySearchFunc(w.ready[slot], exit, time.Time.Compare)
		if i < len(w.ready[slot]) {
			end = w.ready[slot][i]
		}
	}
	return end.Add(chaosMargin), true
}

// explain returns the blow whose window a failed attempt lies in: a failure
// ends after the blow and before its window closes (or while the window is
// still open, unless final), and on a reused keep-alive connection it must
// be that connection's worker.
func (w *windows) explain(a attempt, final bool) (blow, bool) {
	for _, b := range w.blows {
		if a.end.Before(b.at) {
			continue
		}
		if a.reused && a.connPid != b.pid {
			continue
		}
		end, known := w.end(b)
		if !known && !final || known && !a.end.After(end) {
			return b, true
		}
	}
	return blow{}, false
}

func testChaos(t *testing.T, m mechanism, seed uint64, duration time.Duration) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := m.start(t, poolConfig{workers: chaosWorkers, heartbeat: chaosHeartbeat})
	t.Cleanup(func() { saveLog(t, p) })
	sup := p.pid()
	tr := startTraffic(t, p.addr, 4, 4, duration+90*time.Second)
	tr.waitAnswered(300, 10*time.Second)

	baseFDs := stableFDs(sup, 5*time.Second)
	baseTargets := fdTargets(sup)
	baseThreads := statusInt(sup, "Threads")
	t.Logf("supervisor %d at the start: %d descriptors, %d threads, VmRSS %d kB", sup, baseFDs, baseThreads, statusInt(sup, "VmRSS"))
	zw := watchZombies(sup, chaosZombie)
	defer zw.stop()

	s := newSignaller(p)
	var blows []blow
	stopped := map[int]bool{}
	t.Cleanup(func() {
		for pid := range stopped {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	actions := map[string]int{}
	asked := chaosWorkers // the size the sequence asks for, refusals aside
	reported := map[int]bool{}
	unexplained := 0
	// check reports failures outside every window, among those that ended
	// before `before`.
	check := func(before time.Time, final bool) {
		w := newWindows(blows, p.timedEvents(0))
		for i, a := range tr.snapshot() {
			if !a.lost() || reported[i] || a.end.After(before) {
				continue
			}
			if _, ok := w.explain(a, final); ok {
				continue
			}
			reported[i] = true
			unexplained++
			if unexplained <= 20 {
				t.Errorf("request failed outside every kill window: %s at %s (started %s, keep-alive %t, reused %t, connection's worker %d)",
					a.failure, a.end.Format("15:04:05.000"), a.start.Format("15:04:05.000"), a.keepAlive, a.reused, a.connPid)
			}
		}
	}

	begin := time.Now()
	for time.Since(begin) < duration {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond) // the workload's pace
		kinds := []string{"TTIN", "TTOU", "HUP", "KILL", "STOP"}
		kind := kinds[rng.IntN(len(kinds))]
		if kind == "TTIN" && asked >= chaosMaxSize {
			kind = "TTOU"
		}
		victimIdx := rng.IntN(1 << 20)
		switch kind {
		case "TTIN":
			s.send(syscall.SIGTTIN)
			asked++
		case "TTOU":
			s.send(syscall.SIGTTOU)
			asked = max(1, asked-1)
		case "HUP":
			s.send(syscall.SIGHUP)
		case "KILL", "STOP":
			st := workerStates(p.plainEvents())
			var ready []int
			for _, pid := range p.workerPids() {
				if st[pid] == supervisor.Ready && !stopped[pid] {
					ready = append(ready, pid)
				}
			}
			if len(ready) == 0 {
				kind += " (no ready worker: skipped)"
				break
			}
			slices.Sort(ready)
			pid := ready[victimIdx%len(ready)]
			sig := syscall.SIGKILL
			if kind == "STOP" {
				sig = syscall.SIGSTOP
				stopped[pid] = true
			}
			blows = append(blows, blow{at: time.Now(), pid: pid, what: "SIG" + kind})
			if err := syscall.Kill(pid, sig); err != nil {
				t.Logf("kill -%s %d: %v", kind, pid, err)
			}
		}
		actions[kind]++
		check(time.Now().Add(-chaosMargin), false)
		if tr.stopped() {
			t.Fatalf("the load stopped during the chaos: %v", tally(tr.snapshot()))
		}
	}
	t.Logf("chaos for %v: actions %s", time.Since(begin).Round(time.Millisecond), countsString(actions))

	// The pool converges to the size asked for.
	s.barrier()
	l := account(p, chaosWorkers)
	received := s.received()
	want := l.target(chaosWorkers, received)
	settle := time.Now()
	var stoppedPids []int
	for pid := range stopped {
		stoppedPids = append(stoppedPids, pid)
	}
	waitGone(t, stoppedPids, 20*time.Second) // the heartbeat catches them
	pids := p.converge(want, 40*time.Second)
	t.Logf("converged to %d workers %v in %v (the sequence asked for %d, refusals aside)", len(pids), pids, time.Since(settle).Round(time.Millisecond), asked)
	tr.halt()
	check(time.Now(), true)
	l = account(p, chaosWorkers)

	// Figures.
	evs := p.plainEvents()
	t.Logf("events by kind: %s", eventCounts(evs))
	logWarnings(t, p, "chaos "+m.want)
	attempts := tr.snapshot()
	r := tally(attempts)
	t.Logf("load: %v", r)
	w := newWindows(blows, p.timedEvents(0))
	byBlow := map[string]int{}
	for _, a := range attempts {
		if a.lost() {
			if b, ok := w.explain(a, true); ok {
				byBlow[b.what]++
			}
		}
	}
	t.Logf("failed requests by the blow whose window they fell in: %s; outside every window: %d", countsString(byBlow), unexplained)
	healthyKills := 0
	for _, e := range evs {
		if e.Kind == supervisor.EventKill && !stopped[e.Worker.Pid] {
			healthyKills++
		}
	}
	if healthyKills > 0 {
		t.Logf("MEASUREMENT: the supervisor killed %d workers the test had not stopped (heartbeat %v on a contended machine, or a stop timeout)", healthyKills, chaosHeartbeat)
	}
	// A keep-alive connection closed unanswered belongs to a worker that left.
	exited := map[int]bool{}
	for _, e := range evs {
		if e.Kind == supervisor.EventExit {
			exited[e.Worker.Pid] = true
		}
	}
	for _, a := range attempts {
		if a.retry && !exited[a.connPid] {
			t.Errorf("keep-alive connection of worker %d, which did not leave, closed before an answer (%s)", a.connPid, a.failure)
		}
	}
	if r.ok < 2000 {
		t.Errorf("only %d requests answered: too little load to prove anything", r.ok)
	}

	label := "chaos, migration " + m.want
	l.check(t, label, s.sent, received)
	if len(l.slots) != want {
		t.Errorf("%s: the events leave %d slots in the pool, the signals ask for %d", label, len(l.slots), want)
	}

	// Back to the initial size, the descriptors to their baseline.
	for i := 0; i < 20 && want != chaosWorkers; i++ {
		if want < chaosWorkers {
			s.send(syscall.SIGTTIN)
		} else {
			s.send(syscall.SIGTTOU)
		}
		s.barrier()
		l = account(p, chaosWorkers)
		want = l.target(chaosWorkers, s.received())
		p.converge(want, 30*time.Second)
	}
	p.converge(chaosWorkers, 30*time.Second)
	fds := waitFDs(sup, baseFDs, 10*time.Second)
	threads := statusInt(sup, "Threads")
	peakFDs, peakThreads, samples, zombie := zw.peaks()
	t.Logf("supervisor at the end (%d workers again): %d descriptors (baseline %d, peak %d), %d threads (baseline %d, peak %d), VmRSS %d kB; longest a child stayed a zombie: %v (%d samples)",
		chaosWorkers, fds, baseFDs, peakFDs, threads, baseThreads, peakThreads, statusInt(sup, "VmRSS"), zombie.Round(time.Millisecond), samples)
	if fds != baseFDs {
		t.Errorf("the supervisor has %d descriptors with %d workers, %d at the start: %s", fds, chaosWorkers, baseFDs, fdDiff(baseTargets, fdTargets(sup)))
	}
	if threads > baseThreads+chaosThreadSlack {
		t.Errorf("the supervisor has %d threads, %d at the start (slack %d)", threads, baseThreads, chaosThreadSlack)
	}
	zw.stop()
	for pid, d := range zw.zombies() {
		t.Errorf("child %d of the supervisor stayed a zombie for %v", pid, d.Round(time.Millisecond))
	}

	start := time.Now()
	p.signal(syscall.SIGTERM)
	code, runErr := p.wait(15 * time.Second)
	t.Logf("TERM: the supervisor exited %d in %v (Run: %q)", code, time.Since(start).Round(time.Millisecond), runErr)
	if code != 0 {
		t.Errorf("after TERM the supervisor exited %d (%q), want 0", code, runErr)
	}
	checkNoOrphans(t, p, 5*time.Second)
}
