package metrics

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/clusterflock/clusterflock/supervisor"
	"github.com/prometheus/client_golang/prometheus"
)

// startHub starts a supervisor side on a free port with a fake pool.
func startHub(t *testing.T, e *Exporter) *hub {
	t.Helper()
	if e.Addr == "" {
		e.Addr = "127.0.0.1:0"
	}
	s, err := e.Supervisor(plug.SupervisorConfig{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Pool:   func() supervisor.Snapshot { return supervisor.Snapshot{Desired: 2} },
		Queues: func() ([]plug.Queue, error) { return []plug.Queue{{Len: 1, Max: 128}}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := s.(*hub)
	t.Cleanup(func() { h.Close() })
	return h
}

// pair is a connected metrics channel: the supervisor's end as a file (for
// Attach) and the worker's end as a connection.
func pair(t *testing.T) (*os.File, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	wf := os.NewFile(uintptr(fds[1]), "worker")
	c, err := net.FileConn(wf)
	wf.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return os.NewFile(uintptr(fds[0]), "supervisor"), c
}

// attachWorker attaches a real worker side with registry reg.
func attachWorker(t *testing.T, h *hub, pid int, reg prometheus.Gatherer) *worker {
	t.Helper()
	return attachWorkerWith(t, h, pid, &Exporter{Gatherer: reg})
}

// attachWorkerWith attaches a real worker side of e.
func attachWorkerWith(t *testing.T, h *hub, pid int, e *Exporter) *worker {
	t.Helper()
	sup, wk := pair(t)
	wf, err := wk.(*net.UnixConn).File()
	if err != nil {
		t.Fatal(err)
	}
	wk.Close()
	pw, err := e.Worker(plug.WorkerConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, wf)
	if err != nil {
		t.Fatal(err)
	}
	h.Event(supervisor.Event{Kind: supervisor.EventSpawn, Worker: supervisor.Worker{Pid: pid, Slot: pid % 10}})
	h.Attach(pid, sup)
	return pw.(*worker)
}

func counterReg(v float64) (*prometheus.Registry, prometheus.Counter) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "app_total", Help: "App."})
	c.Add(v)
	r := prometheus.NewRegistry()
	r.MustRegister(c)
	return r, c
}

func appTotal(t *testing.T, h *hub) float64 {
	t.Helper()
	mfs, err := h.workerFamilies()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "app_total" {
			return mf.Metric[0].GetCounter().GetValue()
		}
	}
	return -1
}

// TestHubWorkerLeaves: a scrape sees the workers' current counts; a
// worker that closes (its final snapshot sent) keeps counting in.
func TestHubWorkerLeaves(t *testing.T) {
	h := startHub(t, &Exporter{})
	ra, ca := counterReg(3)
	rb, _ := counterReg(4)
	a := attachWorker(t, h, 101, ra)
	attachWorker(t, h, 102, rb)
	if got := appTotal(t, h); got != 7 {
		t.Fatalf("app_total = %v, want 7", got)
	}
	ca.Add(10) // counted after the last scrape: the final snapshot has it
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, h, 1)
	if got := appTotal(t, h); got != 17 {
		t.Errorf("app_total after a worker left = %v, want 17", got)
	}
}

func waitMembers(t *testing.T, h *hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		got := len(h.members)
		h.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d members, want %d", got, n)
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
}

// TestHubWedgedWorker: a worker that never answers holds a scrape for
// ScrapeTimeout at most, and shows its last snapshot.
func TestHubWedgedWorker(t *testing.T) {
	h := startHub(t, &Exporter{ScrapeTimeout: 50 * time.Millisecond})
	ra, _ := counterReg(5)
	attachWorker(t, h, 101, ra)
	sup, wk := pair(t)
	h.Attach(102, sup) // never reads its gathers
	_ = wk
	start := time.Now()
	if got := appTotal(t, h); got != 5 {
		t.Errorf("app_total = %v, want 5", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a scrape with a wedged worker took %v, want about ScrapeTimeout (50ms)", d)
	}
}

// TestHubHostileWorker: garbage, a malformed snapshot and an oversized
// frame are the worker's failure: counted, its last good snapshot stays,
// the supervisor carries on.
func TestHubHostileWorker(t *testing.T) {
	h := startHub(t, &Exporter{ScrapeTimeout: 50 * time.Millisecond})
	ra, _ := counterReg(2)
	attachWorker(t, h, 101, ra)
	for _, c := range []struct {
		name  string
		bytes []byte
	}{
		{"a malformed snapshot", frame(frameSnapshot, []byte{0xff, 0xff, 0xff, 0x0f, 1, 2})},
		{"an unknown frame", frame('z', nil)},
		{"a cut count that is not one", frame(frameCut, []byte("-x"))},
		{"an oversized frame", func() []byte {
			b := make([]byte, 4)
			binary.BigEndian.PutUint32(b, maxFrame+1)
			return b
		}()},
	} {
		sup, wk := pair(t)
		h.Attach(200, sup)
		wk.Write(snapshotFrame(1))
		wk.Write(c.bytes)
		if got := appTotal(t, h); got < 3 {
			t.Errorf("after %s: app_total = %v, want ≥ 3", c.name, got)
		}
		wk.Close()
		waitMembers(t, h, 1)
	}
	mfs, _ := h.registry.Gather()
	var errs []string
	for _, mf := range mfs {
		if mf.GetName() == "clusterflock_metrics_worker_errors_total" {
			for _, m := range mf.Metric {
				errs = append(errs, m.Label[0].GetValue())
			}
		}
	}
	if s := strings.Join(errs, ","); !strings.Contains(s, "malformed") || !strings.Contains(s, "oversized") {
		t.Errorf("worker errors counted: %s, want malformed and oversized", s)
	}
	if got := appTotal(t, h); got != 6 {
		t.Errorf("app_total at the end = %v, want 2 + 4 × 1 kept", got)
	}
}

// snapshotFrame is the snapshot frame of counterReg(v).
func snapshotFrame(v float64) []byte {
	reg, _ := counterReg(v)
	mfs, _ := reg.Gather()
	body, _ := encodeFamilies(mfs)
	return frame(frameSnapshot, body)
}

func frame(k byte, body []byte) []byte {
	b := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)+1))
	b[4] = k
	return append(b, body...)
}

// TestHubRefusesBadAddr: an address that is taken or malformed is an error
// naming it, at start.
func TestHubRefusesBadAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, addr := range []string{ln.Addr().String(), "127.0.0.1:notaport", ""} {
		_, err := (&Exporter{Addr: addr}).Supervisor(plug.SupervisorConfig{Logger: slog.Default()})
		if err == nil || !strings.Contains(err.Error(), "Exporter.Addr") {
			t.Errorf("Addr %q: error %v, want one naming Exporter.Addr", addr, err)
		}
	}
}

// TestHubConflictServed: a family a worker may not send is left out and
// counted; the scrape still succeeds with the rest.
func TestHubConflictServed(t *testing.T) {
	h := startHub(t, &Exporter{})
	reg, _ := counterReg(2)
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "clusterflock_workers", Help: "not yours"}))
	attachWorker(t, h, 101, reg)
	var resp *http.Response
	var body []byte
	for range 2 { // the pool's own families are gathered first: the second scrape shows the first's count
		var err error
		if resp, err = http.Get("http://" + h.ln.Addr().String() + "/metrics"); err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "app_total 2") ||
		!strings.Contains(string(body), `clusterflock_metrics_worker_errors_total{reason="conflict"} 1`) ||
		strings.Contains(string(body), "not yours") {
		t.Errorf("status %d, body:\n%s", resp.StatusCode, body)
	}
}

// TestHubCutFrameOfRefusedSnapshot: a worker's account of a cut applies to
// the snapshot that follows it alone: after that snapshot is refused, a
// series missing from the next is taken for dropped (its value kept), so
// it counts on from there when it comes back.
func TestHubCutFrameOfRefusedSnapshot(t *testing.T) {
	h := startHub(t, &Exporter{ScrapeTimeout: 50 * time.Millisecond})
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "app_hits_total", Help: "Hits."}, []string{"path"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(hits)
	snap := func() []byte {
		mfs, _ := reg.Gather()
		body, _ := encodeFamilies(mfs)
		return frame(frameSnapshot, body)
	}
	sup, wk := pair(t)
	h.Attach(200, sup)
	hits.WithLabelValues("/").Add(1)
	hits.WithLabelValues("/gone").Add(3)
	wk.Write(snap())
	wantHits(t, h, `/gone`, 3)
	wk.Write(frame(frameCut, cutSeries{n: 1, families: map[string]bool{"app_hits_total": true}}.encode()))
	wk.Write(frame(frameSnapshot, []byte{0xff, 0xff, 0xff, 0x0f, 1, 2}))
	hits.DeleteLabelValues("/gone")
	wk.Write(snap()) // dropped, no cut
	wantHits(t, h, `/gone`, 3)
	hits.WithLabelValues("/gone").Add(5)
	wk.Write(snap())
	wantHits(t, h, `/gone`, 8)
}

// wantHits waits, within a deadline, for app_hits_total{path} to be want.
func wantHits(t *testing.T, h *hub, path string, want float64) {
	t.Helper()
	var got float64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		mfs, err := h.workerFamilies()
		if err != nil {
			t.Fatal(err)
		}
		s, _ := newSet(mfs)
		if got = seriesValue(s, "app_hits_total", `path="`+path+`"`); got == want {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
	t.Fatalf("app_hits_total{path=%q} = %v, want %v", path, got, want)
}
