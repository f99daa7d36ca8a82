//go:build linux

package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs addr's /metrics and parses it.
func scrape(addr string) (map[string]*dto.MetricFamily, error) {
	return scrapeWithin(addr, 5*time.Second)
}

// scrapeWithin is scrape with a timeout.
func scrapeWithin(addr string, timeout time.Duration) (map[string]*dto.MetricFamily, error) {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("status %s: %s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// value sums family name's counter or gauge series whose labels include
// want (name=value pairs); -1 if there is no such family.
func value(mfs map[string]*dto.MetricFamily, name string, want ...string) float64 {
	mf, ok := mfs[name]
	if !ok {
		return -1
	}
	var sum float64
	for _, m := range mf.Metric {
		if !hasLabels(m, want) {
			continue
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
	}
	return sum
}

func hasLabels(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.Label {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// counterWatch scrapes addr until stopped and records every violation of
// "counters never go backwards" among the names given.
type counterWatch struct {
	addr  string
	names []string
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	bad   []string
	n     int // scrapes that succeeded
}

func watchCounters(addr string, names ...string) *counterWatch {
	m := &counterWatch{addr: addr, names: names, stop: make(chan struct{}), done: make(chan struct{})}
	go m.run()
	return m
}

func (m *counterWatch) run() {
	defer close(m.done)
	last := map[string]float64{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		mfs, err := scrape(m.addr)
		if err != nil {
			continue // the address moves to a new supervisor during an upgrade
		}
		m.mu.Lock()
		m.n++
		for _, name := range m.names {
			v := value(mfs, name)
			if v < last[name] {
				m.bad = append(m.bad, fmt.Sprintf("%s went from %v to %v", name, last[name], v))
			}
			last[name] = max(last[name], v)
		}
		m.mu.Unlock()
	}
}

func (m *counterWatch) finish(t *testing.T) {
	t.Helper()
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == 0 {
		t.Error("no scrape succeeded while watching the counters")
	}
	for _, b := range m.bad {
		t.Errorf("counter decreased: %s", b)
	}
}

// hit sends n requests to /count, each on a new connection.
func hit(t *testing.T, p *pool, n int) {
	t.Helper()
	for range n {
		if _, err := p.get("/count"); err != nil {
			t.Fatalf("GET /count: %v", err)
		}
	}
}

// waitCount polls the merged app_hits_total until it reads want.
func waitCount(t *testing.T, addr string, want float64) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got float64
	for {
		mfs, err := scrape(addr)
		if err == nil {
			if got = value(mfs, "app_hits_total"); got == want {
				return mfs
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("app_hits_total is %v (last error %v), want %v", got, err, want)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// TestMetricsMerged: a handler counts its own requests in each worker; the
// supervisor's /metrics reads exactly the requests sent, across a HUP that
// replaces every worker, recycling (MaxRequests), a TTOU, a SIGKILL just
// after a scrape, and a binary upgrade, and the counters never decrease
// while that happens.
func TestMetricsMerged(t *testing.T) {
	// Heartbeats every 100 ms: a worker past MaxRequests asks to be
	// replaced at its next one.
	p := startPool(t, poolConfig{workers: 3, metrics: true, maxRequests: 150, heartbeat: 400 * time.Millisecond, shutdown: 5 * time.Second})
	addr := p.waitFor("serving metrics", nil, 5*time.Second).str("addr")
	watch := watchCounters(addr, "app_hits_total", "clusterflock_http_requests_total", "clusterflock_worker_exits_total")
	total := 0
	step := func(what string, n int) {
		t.Helper()
		hit(t, p, n)
		total += n
		mfs := waitCount(t, addr, float64(total))
		if got := value(mfs, "clusterflock_http_requests_total", "code", "200"); got != float64(total) {
			t.Errorf("after %s: clusterflock_http_requests_total{code=\"200\"} = %v, want %d", what, got, total)
		}
	}
	mark := p.mark()
	step("the first requests", 600) // 200 a worker: each is recycled
	waitExits(t, p, mark, 3)
	step("recycling", 100)

	mark = p.mark()
	p.signal(syscall.SIGHUP)
	p.waitEvent(mark, supervisor.EventRestart, func(e event) bool { return e.Reason == "done" })
	waitExits(t, p, mark, 3)
	step("a rolling restart", 200)

	mark = p.mark()
	p.signal(syscall.SIGTTOU)
	waitExits(t, p, mark, 1)
	step("a TTOU", 100)

	// A worker killed abruptly right after a scrape (a fresh gather) has
	// lost nothing: its last snapshot stays.
	mark = p.mark()
	if err := syscall.Kill(p.workerPids()[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.waitEvent(mark, supervisor.EventReady, nil)
	step("a SIGKILL", 100)

	mark = p.mark()
	p.signal(syscall.SIGUSR2)
	newPid := p.waitUpgradeBegin(mark)
	if res := p.upgradeOutcome(mark); res.Reason != "done" {
		t.Fatalf("binary upgrade to %d: %s", newPid, res.Reason)
	}
	if code, runErr := p.wait(15 * time.Second); code != 0 || runErr != "" {
		t.Fatalf("old supervisor after the upgrade: exit code %d, Run error %q", code, runErr)
	}
	waitCount(t, addr, float64(total)) // the new supervisor serves the old totals
	step("a binary upgrade", 200)
	watch.finish(t)

	mfs, err := scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	if n := value(mfs, "clusterflock_worker_exits_total", "reason", "recycled"); n < 1 {
		t.Errorf("clusterflock_worker_exits_total{reason=\"recycled\"} = %v after %d requests with MaxRequests 150", n, total)
	}
	for _, reason := range []string{"upgrade", "retired", "signal"} {
		if n := value(mfs, "clusterflock_worker_exits_total", "reason", reason); n < 1 {
			t.Errorf("clusterflock_worker_exits_total{reason=%q} = %v, want ≥ 1", reason, n)
		}
	}
	if n := value(mfs, "clusterflock_upgrades_total", "result", "done"); n != 1 {
		t.Errorf("clusterflock_upgrades_total{result=\"done\"} = %v, want 1", n)
	}
	if n := value(mfs, "clusterflock_workers", "state", "ready"); n < 2 {
		t.Errorf("clusterflock_workers{state=\"ready\"} = %v, want ≥ 2", n)
	}
	if r := mfs["clusterflock_worker_resident_bytes"]; r == nil || len(r.Metric) < 2 || r.Metric[0].GetGauge().GetValue() < 1<<20 {
		t.Errorf("clusterflock_worker_resident_bytes does not show each worker's RSS: %v", r)
	}
	if g := mfs["go_goroutines"]; g == nil || len(g.Metric) < 2 || !hasLabels(g.Metric[0], []string{"slot", "0"}) {
		t.Errorf("go_goroutines (Exporter.PerSlot) is not shown per slot: %v", g)
	}
	syscall.Kill(newPid, syscall.SIGTERM)
}

// waitExits waits until n workers have exited since record index from.
func waitExits(t *testing.T, p *pool, from, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(p.events(from, supervisor.EventExit)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers exited, want %d", len(p.events(from, supervisor.EventExit)), n)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// TestMetricsAddrTaken: a taken Exporter.Addr stops the pool at start,
// naming the address, before any worker is forked.
func TestMetricsAddrTaken(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2, metrics: true})
	addr := p.waitFor("serving metrics", nil, 5*time.Second).str("addr")
	q := startPool(t, poolConfig{workers: 2, noWait: true, env: []string{envMetrics + "=" + addr}})
	r := q.waitFor("run returned", nil, 10*time.Second)
	if e := r.str("err"); !strings.Contains(e, addr) || !strings.Contains(e, "Exporter.Addr") {
		t.Errorf("Run error %q, want one naming Exporter.Addr %s", e, addr)
	}
	if n := len(q.events(0, supervisor.EventSpawn)); n != 0 {
		t.Errorf("%d workers forked before the bad address was reported", n)
	}
}
