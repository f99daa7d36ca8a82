package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Lifecycle figures, all on the "pool" server (library defaults) with the
// trivial handler, shared placement. Rows: kind, rep, key, value.

var lifecycleHeader = []string{"kind", "rep", "key", "value"}

func (c *config) lifecycleAll(specs []serverSpec) error {
	w, err := newCSV(filepath.Join(c.out, "lifecycle.csv"), lifecycleHeader)
	if err != nil {
		return err
	}
	defer w.close()
	c.poolSteps(specs, w)
	if slices.Contains(c.steps, "scrape") {
		// Needs only the pool to build, not poolM in -servers.
		if !c.poolBuilt {
			w.row("scrape", 0, "skipped", "the clusterflock library did not build")
		} else {
			c.scrapeAll(w)
		}
	}
	return nil
}

// poolSteps runs the lifecycle steps on the "pool" server.
func (c *config) poolSteps(specs []serverSpec, w *csvWriter) {
	var pool *serverSpec
	for i := range specs {
		if specs[i].name == "pool" {
			pool = &specs[i]
		}
	}
	if pool == nil {
		if slices.ContainsFunc(c.steps, func(s string) bool { return s != "scrape" }) {
			c.notes = append(c.notes, "lifecycle figures skipped: the pool server is not part of this run")
		}
		return
	}
	if !c.rolling {
		w.row("rolling", 0, "skipped", c.rollingNote)
	}
	steps := []struct {
		name string
		run  func(r *running, w *csvWriter) error
	}{
		{"supervisor cost", c.supervisorCost},
		{"refork", func(r *running, w *csvWriter) error { return c.refork(r, w, c.reforkReps) }},
		{"SIGKILL under load (close)", func(r *running, w *csvWriter) error {
			return c.killUnderLoad(r, w, c.killReps, false)
		}},
		{"SIGKILL under load (keep-alive)", func(r *running, w *csvWriter) error {
			return c.killUnderLoad(r, w, max(1, c.killReps-1), true)
		}},
	}
	if c.rolling {
		steps = append(steps,
			struct {
				name string
				run  func(r *running, w *csvWriter) error
			}{"rolling restart (close)", func(r *running, w *csvWriter) error { return c.rollingRestart(r, w, c.rollingReps, false) }},
			struct {
				name string
				run  func(r *running, w *csvWriter) error
			}{"rolling restart (keep-alive)", func(r *running, w *csvWriter) error {
				return c.rollingRestart(r, w, max(1, c.rollingReps-1), true)
			}},
		)
	}
	steps = slices.DeleteFunc(steps, func(s struct {
		name string
		run  func(r *running, w *csvWriter) error
	}) bool {
		key := strings.Fields(strings.ToLower(s.name))[0]
		if key == "sigkill" {
			key = "kill"
		}
		return !slices.Contains(c.steps, key)
	})
	if c.quick {
		steps = slices.DeleteFunc(steps, func(s struct {
			name string
			run  func(r *running, w *csvWriter) error
		}) bool {
			return s.name == "SIGKILL under load (keep-alive)" || s.name == "rolling restart (keep-alive)"
		})
	}
	for _, st := range steps {
		fmt.Printf("lifecycle: %s\n", st.name)
		c.waitQuiet("lifecycle "+st.name, 0)
		srv, err := c.start(*pool, "ok", false)
		if err != nil {
			c.notes = append(c.notes, fmt.Sprintf("lifecycle %s: start failed: %v", st.name, err))
			w.row(st.name, 0, "error", "start failed")
			continue
		}
		if err := st.run(srv, w); err != nil {
			c.notes = append(c.notes, fmt.Sprintf("lifecycle %s: %v", st.name, err))
			w.row(st.name, 0, "error", err.Error())
			fmt.Printf("lifecycle %s: %v\n", st.name, err)
		}
		srv.stop()
	}
}

// settle waits until the pool has its full count of live workers and each
// of them answers on a fresh connection; it returns them sorted.
func (c *config) settle(r *running) ([]int, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur := liveChildren(r.pid)
		if os.Getenv("BENCH_SPARE") != "" && len(cur) == r.spec.procs+1 {
			// Options.Spare: one child is the standby, which serves
			// nothing until it takes a dead worker's slot: keep the
			// children that answer.
			cur = answering(r.addr, cur, r.spec.procs, 5*time.Second)
		}
		if len(cur) == r.spec.procs {
			if err := seeAll(r.addr, cur, 5*time.Second); err != nil {
				return nil, err
			}
			// The victim (lowest PID) must be older than the library's
			// YoungAge, or its death counts as a crash loop and the refork
			// is delayed by the backoff: measure a mature worker's death.
			if wait := c.victimAge - age(cur[0]); wait > 0 {
				time.Sleep(wait)
			}
			return cur, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pool did not settle: %d live workers, want %d", len(cur), r.spec.procs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// refork: SIGKILL the lowest-PID worker of an idle pool, then open fresh
// connections one at a time (250 ms timeout each) until a PID not seen
// before answers. serving_ms is kill → that answer; fork_seen_ms is kill →
// the new PID appearing among the supervisor's children.
func (c *config) refork(r *running, w *csvWriter, reps int) error {
	known := map[int]bool{}
	for rep := 1; rep <= reps; rep++ {
		cur, err := c.settle(r)
		if err != nil {
			return fmt.Errorf("rep %d: %w", rep, err)
		}
		for _, p := range cur {
			known[p] = true
		}
		victim := cur[0]
		forkSeen := make(chan time.Duration, 1)
		stop := make(chan struct{})
		t0 := time.Now()
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, p := range children(r.pid) {
					if !known[p] {
						forkSeen <- time.Since(t0)
						return
					}
				}
				time.Sleep(200 * time.Microsecond)
			}
		}()
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			close(stop)
			return fmt.Errorf("rep %d: kill %d: %w", rep, victim, err)
		}
		probeErrs := 0
		serving := time.Duration(-1)
		newPid := 0
		for time.Since(t0) < 5*time.Second {
			a, err := probe(r.addr, "/", 250*time.Millisecond)
			if err != nil || a.status != 200 {
				probeErrs++
				time.Sleep(200 * time.Microsecond)
				continue
			}
			if !known[a.pid] {
				serving, newPid = time.Since(t0), a.pid
				break
			}
		}
		var fork time.Duration = -1
		select {
		case fork = <-forkSeen:
		case <-time.After(50 * time.Millisecond):
		}
		close(stop)
		known[newPid] = true
		w.row("refork", rep, "serving_ms", msf(serving))
		w.row("refork", rep, "fork_seen_ms", msf(fork))
		w.row("refork", rep, "probe_errors", probeErrs)
		fmt.Printf("  refork %2d: serving %s ms, fork seen %s ms, probe errors %d\n", rep, msf(serving), msf(fork), probeErrs)
		if serving < 0 {
			return fmt.Errorf("rep %d: no replacement answered within 5 s", rep)
		}
	}
	return nil
}

func msf(d time.Duration) string {
	if d < 0 {
		return "NA"
	}
	return fmt.Sprintf("%.1f", float64(d)/1e6)
}

// killUnderLoad: 64 closed-loop raw clients for 3 s (1.5 s in quick mode);
// SIGKILL the lowest-PID worker at 1 s; count every failed request.
func (c *config) killUnderLoad(r *running, w *csvWriter, reps int, keepAlive bool) error {
	kind := "kill_close"
	if keepAlive {
		kind = "kill_ka"
	}
	dur, at := 3*time.Second, time.Second
	if c.quick {
		dur, at = 2*time.Second, 700*time.Millisecond
	}
	known := map[int]bool{}
	for rep := 1; rep <= reps; rep++ {
		cur, err := c.settle(r)
		if err != nil {
			return fmt.Errorf("rep %d: %w", rep, err)
		}
		for _, p := range cur {
			known[p] = true
		}
		victim := cur[0]
		ctx, cancel := context.WithTimeout(context.Background(), dur)
		start := time.Now()
		resc := make(chan *loadResult, 1)
		go func() { resc <- runLoad(ctx, r.addr, c.conns, keepAlive, start) }()
		time.Sleep(at)
		killAt := time.Since(start)
		syscall.Kill(victim, syscall.SIGKILL)
		res := <-resc
		cancel()
		before := 0
		for _, t := range res.failAt {
			if t < killAt {
				before++
			}
		}
		serving := time.Duration(-1)
		if t := res.firstSeenAfter(known); t >= 0 {
			serving = t - killAt
		}
		for p := range res.pidsSeen() {
			known[p] = true
		}
		w.row(kind, rep, "total", res.ok+res.failed+res.retryable)
		w.row(kind, rep, "failed", res.failed)
		w.row(kind, rep, "failed_before_kill", before)
		w.row(kind, rep, "retryable", res.retryable)
		w.row(kind, rep, "kinds", res.kindString())
		if res.failed > 0 {
			fmt.Printf("    errors: %s\n", res.sampleString())
		}
		w.row(kind, rep, "serving_ms", msf(serving))
		fmt.Printf("  %s %d: %d failed / %d (%s), %d retryable, replacement serving after %s ms\n",
			kind, rep, res.failed, res.ok+res.failed+res.retryable, res.kindString(), res.retryable, msf(serving))
	}
	return nil
}

// rollingRestart: under 64-client load, SIGHUP the supervisor at 1 s; the
// restart is done when none of the old workers is alive, the pool has its
// full count, and every new worker has answered. Load runs 0.5 s more.
func (c *config) rollingRestart(r *running, w *csvWriter, reps int, keepAlive bool) error {
	kind := "rolling_close"
	if keepAlive {
		kind = "rolling_ka"
	}
	for rep := 1; rep <= reps; rep++ {
		old, err := c.settle(r)
		if err != nil {
			return fmt.Errorf("rep %d: %w", rep, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		res := newLoadResult()
		loadDone := make(chan struct{})
		go func() { runLoadInto(ctx, res, r.addr, c.conns, keepAlive, start); close(loadDone) }()
		time.Sleep(time.Second)
		hupAt := time.Since(start)
		syscall.Kill(r.pid, syscall.SIGHUP)
		var cur []int
		procsAt := time.Duration(-1)
		for time.Since(start)-hupAt < 20*time.Second {
			cur = liveChildren(r.pid)
			if len(cur) == r.spec.procs && !overlaps(cur, old) {
				procsAt = time.Since(start)
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		// Done when every new worker has also answered: usually the load met
		// them before /proc showed the last old worker gone; if the load has
		// not reached one within 1 s, probe fresh connections for it.
		doneAt := time.Duration(-1)
		if procsAt >= 0 {
			waitUntil := time.Now().Add(time.Second)
			for doneAt < 0 {
				seen := res.pidsSeen()
				last, all := procsAt, true
				for _, p := range cur {
					t, ok := seen[p]
					if !ok {
						all = false
						break
					}
					last = max(last, t)
				}
				switch {
				case all:
					doneAt = last
				case time.Now().After(waitUntil):
					if err := seeAll(r.addr, cur, 5*time.Second); err == nil {
						doneAt = time.Since(start)
					} else {
						doneAt = -2
					}
				default:
					time.Sleep(2 * time.Millisecond)
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
		cancel()
		<-loadDone
		during := 0
		for _, t := range res.failAt {
			if t >= hupAt {
				during++
			}
		}
		w.row(kind, rep, "total", res.ok+res.failed+res.retryable)
		w.row(kind, rep, "failed", res.failed)
		w.row(kind, rep, "failed_after_hup", during)
		w.row(kind, rep, "retryable", res.retryable)
		w.row(kind, rep, "kinds", res.kindString())
		if res.failed > 0 {
			fmt.Printf("    errors: %s\n", res.sampleString())
		}
		w.row(kind, rep, "old_gone_ms", msf(procsAt-hupAt))
		w.row(kind, rep, "duration_ms", msf(doneAt-hupAt))
		fmt.Printf("  %s %d: done in %s ms (old workers gone after %s ms), %d failed / %d (%s), %d retryable\n",
			kind, rep, msf(doneAt-hupAt), msf(procsAt-hupAt), res.failed, res.ok+res.failed+res.retryable, res.kindString(), res.retryable)
		if procsAt < 0 {
			return fmt.Errorf("rep %d: rolling restart did not finish within 20 s (workers now %v, before %v)", rep, cur, old)
		}
	}
	return nil
}

func overlaps(a, b []int) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// supervisorCost samples the supervisor's CPU time and RSS while the pool
// is idle, then under wrk keep-alive and Connection: close load.
func (c *config) supervisorCost(r *running, w *csvWriter) error {
	if _, err := c.settle(r); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	for _, state := range []string{"idle", "ka", "close"} {
		done := make(chan error, 1)
		if state == "idle" {
			go func() { time.Sleep(c.supDur); done <- nil }()
		} else {
			go func() {
				_, err := c.runWrk(placement{threads: 1}, r.addr, int(c.supDur/time.Second), state == "close")
				done <- err
			}()
		}
		ns0, t0 := cpuNs(r.pid), time.Now()
		maxRSS := 0
		var err error
	loop:
		for {
			select {
			case err = <-done:
				break loop
			case <-time.After(100 * time.Millisecond):
				rss, _ := rssKB(r.pid)
				maxRSS = max(maxRSS, rss)
			}
		}
		ns1, el := cpuNs(r.pid), time.Since(t0)
		if err != nil {
			return fmt.Errorf("%s load: %w", state, err)
		}
		rss, hwm := rssKB(r.pid)
		maxRSS = max(maxRSS, rss)
		workerRSS := 0
		ws := liveChildren(r.pid)
		for _, p := range ws {
			wr, _ := rssKB(p)
			workerRSS += wr
		}
		cpuPct := 100 * float64(ns1-ns0) / float64(el)
		w.row("supervisor", 0, state+"_cpu_pct", fmt.Sprintf("%.3f", cpuPct))
		w.row("supervisor", 0, state+"_cpu_ms", fmt.Sprintf("%.2f", float64(ns1-ns0)/1e6))
		w.row("supervisor", 0, state+"_seconds", fmt.Sprintf("%.1f", el.Seconds()))
		w.row("supervisor", 0, state+"_rss_kb", maxRSS)
		w.row("supervisor", 0, state+"_hwm_kb", hwm)
		if len(ws) > 0 {
			w.row("supervisor", 0, state+"_worker_rss_kb", workerRSS/len(ws))
		}
		fmt.Printf("  supervisor %-5s: CPU %.3f%% of one core (%.2f ms in %.1f s), RSS max %d KiB (peak %d), worker RSS avg %d KiB\n",
			state, cpuPct, float64(ns1-ns0)/1e6, el.Seconds(), maxRSS, hwm, workerRSS/max(1, len(ws)))
	}
	return nil
}
