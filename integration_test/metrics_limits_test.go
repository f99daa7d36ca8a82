//go:build linux

package integration_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock"
	"github.com/clusterflock/clusterflock/metrics"
	"github.com/clusterflock/clusterflock/supervisor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const (
	// envMintSeries makes each worker of the helper register that many
	// app_minted_total series, with label values of its own (its pid):
	// an app that mints label values.
	envMintSeries = "CF_MINT_SERIES"
	// envMaxSeries is Exporter.MaxSeries.
	envMaxSeries = "CF_MAX_SERIES"
	// envHeavy runs the 400 k series measurement (TestMetricsSeriesHeavy).
	envHeavy = "CF_METRICS_HEAVY"
	// envProcessCollector adds the process collector to the helper's
	// registry.
	envProcessCollector = "CF_PROCESS_COLLECTOR"
)

// mintSeries applies envMaxSeries to e, envProcessCollector to reg and, in
// a worker, registers envMintSeries counters of its own in reg.
func mintSeries(reg *prometheus.Registry, e *metrics.Exporter) {
	if os.Getenv(envProcessCollector) != "" {
		reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if v := os.Getenv(envMaxSeries); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			panic(err)
		}
		e.MaxSeries = n
	}
	n, _ := strconv.Atoi(os.Getenv(envMintSeries))
	if n == 0 || !clusterflock.IsWorker() {
		return
	}
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "app_minted_total", Help: "One series per minted id."}, []string{"id"})
	reg.MustRegister(c)
	pid := os.Getpid()
	for i := range n {
		c.WithLabelValues(fmt.Sprintf("%d-%07d", pid, i)).Inc()
	}
}

// memory is a process's peak and current resident set (VmHWM, VmRSS), in
// bytes.
func memory(t *testing.T, pid int) (peak, now int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			peak = kb << 10
		case "VmRSS:":
			now = kb << 10
		}
	}
	return peak, now
}

// timedScrape scrapes addr and reports how long it took and how many
// series app_minted_total showed.
func timedScrape(t *testing.T, addr string) (time.Duration, int) {
	t.Helper()
	start := time.Now()
	mfs, err := scrapeWithin(addr, 60*time.Second)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	n := 0
	if mf := mfs["app_minted_total"]; mf != nil {
		n = len(mf.Metric)
	}
	return took, n
}

// TestMetricsSeriesHeavy (CF_METRICS_HEAVY=1): two workers register 200 k
// label values each (400 k distinct series), then a rolling restart
// replaces them with two that register 400 k others: the supervisor stays
// under 300 MB, scrapes answer in under 5 s and a TERM stops the pool
// within ShutdownTimeout, Run returning no error. Without -race:
//
//	CF_METRICS_HEAVY=1 go test -count=1 -run '^TestMetricsSeriesHeavy$' -v ./integration_test/
func TestMetricsSeriesHeavy(t *testing.T) {
	if os.Getenv(envHeavy) == "" {
		t.Skip("set " + envHeavy + "=1 to run the 400 k series measurement")
	}
	if raceEnabled {
		t.Skip("a measurement of memory and time: the race detector multiplies both (run it without -race)")
	}
	const shutdown = 5 * time.Second
	maxSeries := metrics.DefaultMaxSeries
	if v, err := strconv.Atoi(os.Getenv(envMaxSeries)); err == nil {
		maxSeries = v
	}
	want := maxSeries - 200 // app_minted_total's share: the Go collector's and the HTTP metrics' series stay
	p := startPool(t, poolConfig{workers: 2, metrics: true, shutdown: shutdown, env: []string{envMintSeries + "=200000", envMaxSeries + "=" + strconv.Itoa(maxSeries)}})
	addr := p.waitFor("serving metrics", nil, 5*time.Second).str("addr")
	report := func(what string) {
		t.Helper()
		took, n := timedScrape(t, addr)
		for deadline := time.Now().Add(60 * time.Second); n < want && time.Now().Before(deadline); {
			took, n = timedScrape(t, addr)
		}
		peak, now := memory(t, p.pid())
		t.Logf("%s: scrape %v, %d app_minted_total series; supervisor VmHWM %d MB, VmRSS %d MB", what, took.Round(time.Millisecond), n, peak>>20, now>>20)
		if took > 5*time.Second {
			t.Errorf("%s: a scrape took %v, want < 5s", what, took)
		}
		if peak > 300<<20 {
			t.Errorf("%s: the supervisor's peak RSS is %d MB, want < 300 MB", what, peak>>20)
		}
	}
	report("started")
	report("again")
	rollingRestart(t, p, 2)
	report("after a rolling restart")
	start := time.Now()
	p.signal(syscall.SIGTERM)
	code, runErr := p.wait(shutdown + 10*time.Second)
	took := time.Since(start)
	t.Logf("TERM: exit %d after %v, Run error %q", code, took.Round(time.Millisecond), runErr)
	if code != 0 || runErr != "" || took > shutdown+2*time.Second {
		t.Errorf("TERM: exit code %d after %v (ShutdownTimeout %v), Run error %q; want 0 within ShutdownTimeout", code, took, shutdown, runErr)
	}
	for _, r := range errorLogs(p) {
		t.Errorf("an ERROR log: %v", r)
	}
}

// errorLogs returns the records at level ERROR so far.
func errorLogs(p *pool) []record {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []record
	for _, r := range p.records {
		if r.str("level") == "ERROR" {
			out = append(out, r)
		}
	}
	return out
}

// TestMetricsSeriesLimit: workers that mint label values of their own (2 ×
// 20,000, MaxSeries 5,000) never take the merged metrics beyond
// MaxSeries, across a rolling restart whose workers mint new ones; the
// refused series are counted, and logged once; the network counters of
// the process collector, which read the whole namespace, are shown once
// (the supervisor's), not summed over workers; a TERM stops the pool
// within ShutdownTimeout, with no error and no ERROR log.
func TestMetricsSeriesLimit(t *testing.T) {
	const shutdown, limit = 5 * time.Second, 5000
	p := startPool(t, poolConfig{workers: 2, metrics: true, shutdown: shutdown,
		env: []string{envMintSeries + "=20000", envMaxSeries + "=" + strconv.Itoa(limit), envProcessCollector + "=1"}})
	addr := p.waitFor("serving metrics", nil, 5*time.Second).str("addr")
	check := func(what string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			mfs, err := scrape(addr)
			if err == nil && value(mfs, "clusterflock_metrics_series") == limit && value(mfs, "clusterflock_metrics_series_refused") > 0 {
				n := 0
				for name, mf := range mfs {
					if !strings.HasPrefix(name, "clusterflock_") || strings.HasPrefix(name, "clusterflock_http_") {
						n += len(mf.Metric)
					}
					if strings.HasPrefix(name, "process_network_") {
						t.Errorf("%s: %s is summed over the workers", what, name)
					}
				}
				if n > limit {
					t.Errorf("%s: %d series from the workers, want ≤ MaxSeries (%d)", what, n, limit)
				}
				if value(mfs, "clusterflock_supervisor_process_network_receive_bytes_total") < 0 {
					t.Errorf("%s: no clusterflock_supervisor_process_network_receive_bytes_total", what)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: clusterflock_metrics_series is %v (refused %v, error %v), want %d", what,
					value(mfs, "clusterflock_metrics_series"), value(mfs, "clusterflock_metrics_series_refused"), err, limit)
			}
			time.Sleep(50 * time.Millisecond) // polling interval, bounded by the deadline
		}
	}
	check("started")
	rollingRestart(t, p, 2)
	check("after a rolling restart")
	if n := len(p.all("metrics: the workers' metrics have more series than Exporter.MaxSeries: series beyond it are left out (logged once; counted in clusterflock_metrics_series_refused)")); n != 1 {
		t.Errorf("the series limit was logged %d times, want once", n)
	}
	start := time.Now()
	p.signal(syscall.SIGTERM)
	code, runErr := p.wait(shutdown + 10*time.Second)
	took := time.Since(start)
	t.Logf("TERM: exit %d after %v", code, took.Round(time.Millisecond))
	if code != 0 || runErr != "" || took > shutdown {
		t.Errorf("TERM: exit code %d after %v (ShutdownTimeout %v), Run error %q; want 0 within ShutdownTimeout", code, took, shutdown, runErr)
	}
	for _, r := range errorLogs(p) {
		t.Errorf("an ERROR log: %v", r)
	}
}

// rollingRestart sends p a HUP and waits until it is done and its n old
// workers have exited.
func rollingRestart(t *testing.T, p *pool, n int) {
	t.Helper()
	mark := p.mark()
	p.signal(syscall.SIGHUP)
	p.waitEvent(mark, supervisor.EventRestart, func(e event) bool { return e.Reason == "done" })
	waitExits(t, p, mark, n)
}
