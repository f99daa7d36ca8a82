package guard

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/internal/rundir"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// TestStuck: in flight with no progress for Timeout is stuck; progress, or
// nothing in flight, starts the clock again.
func TestStuck(t *testing.T) {
	s := &Stuck{Timeout: 3 * time.Second}
	steps := []struct {
		at                 time.Duration
		inFlight, progress int64
		want               bool
	}{
		{0, 1, 0, false},
		{2 * time.Second, 1, 0, false},
		{3 * time.Second, 1, 5, false}, // progress: a request completed (or wrote)
		{5 * time.Second, 1, 5, false},
		{6 * time.Second, 1, 5, true},
		{7 * time.Second, 0, 5, false}, // nothing in flight
		{9 * time.Second, 2, 5, false},
		{10 * time.Second, 2, 5, true},
	}
	for _, st := range steps {
		if _, got := s.Observe(at(st.at), st.inFlight, st.progress); got != st.want {
			t.Errorf("at %v (in flight %d, progress %d): stuck %t, want %t", st.at, st.inFlight, st.progress, got, st.want)
		}
	}
}

// TestMemory: RSS above the limit at every observation for Sustain (and at
// least three of them) is to be recycled; one dip below starts again.
func TestMemory(t *testing.T) {
	m := &Memory{Limit: 100, Sustain: 5 * time.Second}
	steps := []struct {
		at   time.Duration
		rss  int64
		want bool
	}{
		{0, 150, false},
		{4 * time.Second, 150, false},
		{5 * time.Second, 90, false}, // a dip: the spike is over
		{6 * time.Second, 200, false},
		{11 * time.Second, 200, false}, // 5 s, but only two observations
		{12 * time.Second, 200, true},
	}
	for _, st := range steps {
		if _, got := m.Observe(at(st.at), st.rss); got != st.want {
			t.Errorf("at %v (RSS %d): recycle %t, want %t", st.at, st.rss, got, st.want)
		}
	}
}

// TestDumpRefused: a dump directory that is not private (here a symbolic
// link) is not written to; the report says there is no dump, the error why.
func TestDumpRefused(t *testing.T) {
	target := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(target, link)
	r, err := Dump(link, time.Now())
	if !errors.Is(err, rundir.ErrNotPrivate) || !strings.Contains(err.Error(), link) {
		t.Errorf("Dump into a symbolic link: %v; want rundir.ErrNotPrivate naming %s", err, link)
	}
	if r.Path != "" || !strings.HasSuffix(r.String(), "; no goroutine dump") {
		t.Errorf("the report of a refused dump: Path %q, %q; want no path, \"no goroutine dump\"", r.Path, r.String())
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("the link's target has %d entries, want none", len(entries))
	}
}

// TestDump: a real dump of goroutines wedged on a mutex under request
// labels names the requests, their age and the function they block in.
func TestDump(t *testing.T) {
	var mu sync.Mutex
	mu.Lock()
	var started, done sync.WaitGroup
	start := time.Now().Add(-2 * time.Second)
	for range 3 {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ctx := pprof.WithLabels(context.Background(), pprof.Labels(LabelMethod, "GET", LabelPath, "/wedge", LabelStart, start.Format(time.RFC3339Nano)))
			pprof.SetGoroutineLabels(ctx)
			started.Done()
			wedgedHandler(&mu)
		}()
	}
	started.Wait()
	deadline := time.Now().Add(5 * time.Second)
	var r Report
	for {
		var err error
		r, err = Dump(t.TempDir(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Requests) == 1 && r.Requests[0].Count == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond) // until all three wait on the lock; bounded
	}
	mu.Unlock()
	done.Wait()
	if len(r.Requests) != 1 {
		t.Fatalf("report %+v, want one group of 3 requests", r)
	}
	b := r.Requests[0]
	if b.Count != 3 || b.Method != "GET" || b.Path != "/wedge" || b.Age < 2*time.Second ||
		!strings.HasSuffix(b.BlockedIn, "guard.wedgedHandler") || !strings.Contains(b.Waiting, "Mutex") {
		t.Errorf("blocked %+v, want 3× GET /wedge, ≥ 2s old, blocked in guard.wedgedHandler on a Mutex", b)
	}
	body, err := os.ReadFile(r.Path)
	if err != nil || !strings.Contains(string(body), "goroutine ") || !strings.Contains(string(body), "wedgedHandler") {
		t.Errorf("the dump file %s: %v, %d bytes without the goroutines", r.Path, err, len(body))
	}
	if s := r.String(); !strings.Contains(s, "GET /wedge") || !strings.Contains(s, r.Path) {
		t.Errorf("String() = %q", s)
	}
}

//go:noinline
func wedgedHandler(mu *sync.Mutex) {
	mu.Lock()
	mu.Unlock()
}
