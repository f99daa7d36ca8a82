//go:build linux

package integration_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

// TestStuckWorker: a worker whose requests all wedge on one lock is seen
// within StuckTimeout plus a heartbeat; the event names the request, its
// age and the function it blocks in, and the goroutine dump is where it
// says; the worker is replaced and the pool serves again.
func TestStuckWorker(t *testing.T) {
	const stuck = time.Second
	p := startPool(t, poolConfig{workers: 2, heartbeat: 400 * time.Millisecond, shutdown: time.Second,
		env: []string{envWedge + "=1", envStuck + "=" + stuck.String()}})
	mark := p.mark()
	began := time.Now()
	wedged := make(chan error, 1)
	go func() { _, err := p.get("/wedge"); wedged <- err }()
	e := p.waitEvent(mark, supervisor.EventStuck, nil)
	took := time.Since(began)
	t.Logf("stuck worker %d seen after %v (StuckTimeout %v, heartbeats every 100ms): %s", e.Worker.Pid, took.Round(time.Millisecond), stuck, e.Reason)
	if took > stuck+100*time.Millisecond+time.Second { // a second of slack for -race and a loaded machine
		t.Errorf("stuck worker seen after %v, want about StuckTimeout %v plus a heartbeat", took, stuck)
	}
	for _, want := range []string{"GET /wedge", "wedgeForever", "sync.(*Mutex).Lock", "goroutine dump: "} {
		if !strings.Contains(e.Reason, want) {
			t.Errorf("the stuck report does not name %q: %s", want, e.Reason)
		}
	}
	path := regexp.MustCompile(`goroutine dump: (\S+)`).FindStringSubmatch(e.Reason)
	if path == nil {
		t.Fatal("no dump path in the report")
	}
	t.Cleanup(func() { os.Remove(path[1]) })
	if dump, err := os.ReadFile(path[1]); err != nil || !strings.Contains(string(dump), "wedgeForever") {
		t.Errorf("the goroutine dump %s: %v; has wedgeForever: %t", path[1], err, strings.Contains(string(dump), "wedgeForever"))
	}
	// Replaced new-before-old; the wedged request gets ShutdownTimeout,
	// then its worker is killed.
	p.waitEvent(mark, supervisor.EventStop, func(ev event) bool { return ev.Worker.Pid == e.Worker.Pid && ev.Reason == "stuck" })
	p.waitEvent(mark, supervisor.EventExit, func(ev event) bool { return ev.Worker.Pid == e.Worker.Pid })
	if err := <-wedged; err == nil {
		t.Error("the wedged request was answered")
	}
	for i := range 200 {
		if _, err := p.get("/"); err != nil {
			t.Fatalf("request %d after the stuck worker was replaced: %v", i, err)
		}
	}
}

// TestMemoryGuard: a leaking worker is recycled once its RSS has stayed
// above MemoryLimit for the sustain period, under load, losing nothing;
// workers run with GOMEMLIMIT at the limit.
func TestMemoryGuard(t *testing.T) {
	const limit = 96 << 20
	p := startPool(t, poolConfig{workers: 2, heartbeat: 400 * time.Millisecond, shutdown: 2 * time.Second,
		env: []string{envMemory + "=" + strconv.Itoa(limit)}})
	if got, err := p.get("/getenv?k=GOMEMLIMIT"); err != nil || got != strconv.Itoa(limit) {
		t.Errorf("a worker's GOMEMLIMIT is %q (%v), want %d", got, err, limit)
	}
	l := startLoad(t, p.addr)
	mark := p.mark()
	var leakedAt time.Time
	for i := 0; len(p.events(mark, supervisor.EventMemory)) == 0; i++ {
		if i == 200 {
			t.Fatal("no worker was recycled after leaking 200 × 4 MiB")
		}
		if _, err := p.get("/leak?mb=4"); err != nil {
			t.Fatalf("GET /leak: %v", err)
		}
		if leakedAt.IsZero() && i == 60 { // about 120 MiB a worker: over the limit
			leakedAt = time.Now()
		}
		if i >= 60 {
			time.Sleep(50 * time.Millisecond) // pace the leak while the guard watches; bounded by the 200
		}
	}
	e := p.events(mark, supervisor.EventMemory)[0]
	t.Logf("worker %d recycled %v after the pool held ~120 MiB a worker: %s", e.Worker.Pid, time.Since(leakedAt).Round(time.Millisecond), e.Reason)
	p.waitEvent(mark, supervisor.EventStop, func(ev event) bool { return ev.Worker.Pid == e.Worker.Pid && ev.Reason == "memory" })
	p.waitCleanExit(mark, e.Worker.Pid)
	if r := l.finish("load during the memory recycle"); r.failed != 0 {
		t.Errorf("requests lost during the memory recycle: %v", r)
	}
}
