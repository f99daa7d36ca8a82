//go:build linux

package integration_test

// Long life (issue "Reliability proven"): thousands of reforks (SIGKILL a
// worker, wait for its replacement's ready event, repeat) leave the
// supervisor with exactly the descriptors it had once warmed up and about
// the same resident memory.
//
//	CF_LONGLIFE=1 go test -race -run TestLongLife -timeout 30m -v ./integration_test/
//	CF_LONGLIFE_REFORKS=2000, CF_LONGLIFE_WARMUP=500
//
// Warm-up: the supervisor's VmRSS rises by about 4 MB over its first few
// hundred reforks (the Go heap and allocator reaching their steady state;
// measured: 13.5 MB after 100 reforks, 17.4 MB after 600, then flat within
// 0.3 MB for 1,500 more), so the figures to compare are taken after 500.
// Under the race detector VmRSS keeps growing by about 2 kB per refork
// (measured: +5.6 MB over 2,000 after 500 to warm up, about 1 MB per 500,
// while without it the same run stays within 0.3 MB): the race runtime's,
// which the larger slack allows for.
//
// The pace: the supervisor counts a death within YoungAge (1 s, not an
// option) of the fork as a crash, and after two crashes in a row delays the
// refork (100 ms, doubling up to 10 s); a death at an older age resets the
// count. So the test kills a worker older than YoungAge whenever there is
// one, and between such kills the youngest worker as long as the delay that
// costs is shorter than the wait for the other worker to come of age.

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

const (
	lifeWorkers      = 2
	lifeWarmUp       = 500
	youngAge         = time.Second                    // supervisor.Config.YoungAge's default, which Options keeps
	lifeOldAge       = youngAge + 50*time.Millisecond // old enough, with a margin
	backoffBase      = 100 * time.Millisecond         // supervisor.Config.BackoffBase's default
	lifeRSSSlack     = 4 << 10                        // kB: "within a few MB"
	lifeRSSSlackRace = 8 << 10                        // kB, under the race detector
)

// reforkDelay is the refork delay after crashes young deaths in a row.
func reforkDelay(crashes int) time.Duration {
	if crashes <= 1 {
		return 0
	}
	return min(backoffBase<<min(crashes-2, 30), 10*time.Second)
}

func TestLongLife(t *testing.T) {
	if os.Getenv("CF_LONGLIFE") != "1" {
		t.Skip("SKIP: the long-life test runs with CF_LONGLIFE=1 (minutes; give it -timeout 30m)")
	}
	reforks := 2000
	if s := os.Getenv("CF_LONGLIFE_REFORKS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("CF_LONGLIFE_REFORKS=%q: want a positive number", s)
		}
		reforks = n
	}
	warmUp := lifeWarmUp
	if s := os.Getenv("CF_LONGLIFE_WARMUP"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("CF_LONGLIFE_WARMUP=%q: want a number", s)
		}
		warmUp = n
	}
	slack := lifeRSSSlack
	if raceEnabled {
		slack = lifeRSSSlackRace
	}
	p := startPool(t, poolConfig{workers: lifeWorkers})
	t.Cleanup(func() { saveLog(t, p) })
	sup := p.pid()
	mig := p.waitFor("supervisor starting", nil, time.Second).str("migration")
	t.Logf("supervisor %d, migration %s, %d workers: %d reforks to warm up, then %d (race detector: %t)", sup, mig, lifeWorkers, warmUp, reforks, raceEnabled)

	// The live workers: pid → when forked (the supervisor's Worker.Started).
	live := map[int]time.Time{}
	for _, e := range p.events(0, supervisor.EventReady) {
		live[e.Worker.Pid] = e.Worker.Started
	}
	if len(live) != lifeWorkers {
		t.Fatalf("%d ready workers at the start, want %d", len(live), lifeWorkers)
	}
	crashes := 0
	var stats struct {
		old, young, delayed int
		delays              time.Duration
		waited              time.Duration
		longest             time.Duration // kill → the replacement's ready
	}
	deadline, hasDeadline := t.Deadline()
	// resync takes the live workers from the events again after a
	// disturbance (a worker the supervisor killed itself).
	disturbances := 0
	resync := func(why string) {
		disturbances++
		t.Logf("disturbance %d: %s; the workers from the events again", disturbances, why)
		pids := p.converge(lifeWorkers, 30*time.Second)
		clear(live)
		for _, e := range p.plainEvents() {
			if e.Kind == supervisor.EventReady && slices.Contains(pids, e.Worker.Pid) {
				live[e.Worker.Pid] = e.Worker.Started
			}
		}
		crashes = 2 // unknown: assume the backoff runs
	}
	refork := func() bool {
		var oldest, youngest int
		for pid, st := range live {
			if oldest == 0 || st.Before(live[oldest]) {
				oldest = pid
			}
			if youngest == 0 || st.After(live[youngest]) {
				youngest = pid
			}
		}
		victim, old := oldest, true
		if wait := lifeOldAge - time.Since(live[oldest]); wait > 0 {
			if reforkDelay(crashes+1)+150*time.Millisecond <= wait {
				victim, old = youngest, false
			} else {
				time.Sleep(wait) // until the oldest is of age: the schedule, not a synchronisation
				stats.waited += wait
			}
		}
		if time.Since(live[victim]) < youngAge {
			old = false
		}
		mark := p.mark()
		start := time.Now()
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			resync(fmt.Sprintf("kill -KILL %d: %v", victim, err))
			return true
		}
		exit, err := p.findEvent(mark, supervisor.EventExit, func(e event) bool { return e.Worker.Pid == victim }, 15*time.Second)
		if err != nil {
			t.Errorf("the exit of worker %d: %v", victim, err)
			return false
		}
		if !exit.unexpected() || exit.Status != "killed by signal KILL" {
			t.Errorf("worker %d: %s (%q), want an unexpected exit killed by signal KILL", victim, exit.Status, exit.Reason)
		}
		if k, err := p.findEvent(mark, supervisor.EventKill, nil, 0); err == nil {
			resync(fmt.Sprintf("the supervisor killed worker %d: %s", k.Worker.Pid, k.Reason))
			return true
		}
		ready, err := p.findEvent(mark, supervisor.EventReady, func(e event) bool { return e.Worker.Slot == exit.Worker.Slot }, 20*time.Second)
		if err != nil {
			t.Errorf("no replacement of worker %d in slot %d: %v", victim, exit.Worker.Slot, err)
			return false
		}
		stats.longest = max(stats.longest, time.Since(start))
		if rf, err := p.findEvent(mark, supervisor.EventRefork, nil, 0); err == nil && rf.Delay > 0 {
			stats.delayed++
			stats.delays += rf.Delay
		}
		delete(live, victim)
		live[ready.Worker.Pid] = ready.Worker.Started
		if old {
			stats.old++
			crashes = 0
		} else {
			stats.young++
			crashes++
		}
		return true
	}
	run := func(n int, what string) (int, time.Duration) {
		begin := time.Now()
		for i := range n {
			if hasDeadline && time.Until(deadline) < time.Minute {
				t.Errorf("%s: %d of %d reforks done when the test's deadline came near: run with a larger -timeout (e.g. 30m)", what, i, n)
				return i, time.Since(begin)
			}
			if !refork() {
				return i, time.Since(begin)
			}
			if (i+1)%500 == 0 {
				t.Logf("%s: %d reforks in %v; supervisor: %d descriptors, VmRSS %d kB, %d threads", what, i+1, time.Since(begin).Round(time.Second),
					fdCount(sup), statusInt(sup, "VmRSS"), statusInt(sup, "Threads"))
			}
		}
		return n, time.Since(begin)
	}

	n, took := run(warmUp, "warm-up")
	if n < warmUp {
		t.FailNow()
	}
	p.converge(lifeWorkers, 20*time.Second)
	fds0 := stableFDs(sup, 5*time.Second)
	targets0 := fdTargets(sup)
	rss0, thr0 := statusInt(sup, "VmRSS"), statusInt(sup, "Threads")
	t.Logf("after %d reforks to warm up (%v): %d descriptors, VmRSS %d kB, %d threads", n, took.Round(time.Millisecond), fds0, rss0, thr0)

	stats.old, stats.young, stats.delayed, stats.delays, stats.waited, stats.longest = 0, 0, 0, 0, 0, 0
	n, took = run(reforks, "reforks")
	p.converge(lifeWorkers, 20*time.Second)
	fds1 := waitFDs(sup, fds0, 10*time.Second)
	rss1, thr1 := statusInt(sup, "VmRSS"), statusInt(sup, "Threads")
	t.Logf("after %d more reforks in %v (%.1f/s; %d of workers older than YoungAge, %d younger; %d reforks delayed by the backoff, %v in all; %v waited for a worker to come of age; longest kill → replacement ready %v)",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), stats.old, stats.young, stats.delayed, stats.delays, stats.waited.Round(time.Millisecond), stats.longest.Round(time.Millisecond))
	t.Logf("supervisor before → after: descriptors %d → %d, VmRSS %d → %d kB (%+d kB), threads %d → %d",
		fds0, fds1, rss0, rss1, rss1-rss0, thr0, thr1)
	if n < reforks {
		t.Errorf("%d of %d reforks", n, reforks)
	}
	if kills := p.events(0, supervisor.EventKill); len(kills) > 0 {
		t.Errorf("the supervisor killed %d workers itself (%d disturbances), want none in an idle pool: first: worker %d, %s", len(kills), disturbances, kills[0].Worker.Pid, kills[0].Reason)
	}
	if fds1 != fds0 {
		t.Errorf("the supervisor has %d descriptors after %d reforks, %d before: %s", fds1, n, fds0, fdDiff(targets0, fdTargets(sup)))
	}
	if rss1-rss0 > slack {
		t.Errorf("the supervisor's VmRSS grew by %d kB in %d reforks (%d → %d kB), want at most %d kB", rss1-rss0, n, rss0, rss1, slack)
	}
	if l := account(p, lifeWorkers); l.unexpected != l.reforks {
		t.Errorf("%d reforks for %d unexpected exits: every refork follows a death", l.reforks, l.unexpected)
	}

	p.signal(syscall.SIGTERM)
	if code, err := p.wait(15 * time.Second); code != 0 {
		t.Errorf("after TERM the supervisor exited %d (%q), want 0", code, err)
	}
	checkNoOrphans(t, p, 5*time.Second)
}
