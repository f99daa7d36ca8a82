package clusterflock

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/internal/guard"
)

// TestProgress: with StuckTimeout, what counts as progress for the stuck
// guard: a streaming handler's writes and flushes; a hijacked connection
// (a websocket) leaves the requests in flight; a handler that only waits
// makes none. Each request's goroutine carries its labels meanwhile.
func TestProgress(t *testing.T) {
	r := newRequests(options{Options: Options{StuckTimeout: time.Second}})
	step := make(chan string)
	labels := make(chan string, 1)
	h := r.wrap(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/stream":
			for range 3 {
				io.WriteString(w, "tick\n")
				http.NewResponseController(w).Flush()
				<-step
			}
		case "/hijack":
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("Hijack through the progress writer: %v", err)
				return
			}
			<-step
			c.Close()
		case "/wait":
			labels <- "started"
			<-step
		}
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	// A stream: every write and flush is progress, and it stays in flight.
	resp, err := http.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		br.ReadString('\n')
		inFlight, progress := r.stuck()
		if inFlight != 1 || progress < int64(2*(i+1)) {
			t.Errorf("stream, tick %d: in flight %d, progress %d; want 1 and ≥ %d", i, inFlight, progress, 2*(i+1))
		}
		step <- "next"
	}
	resp.Body.Close()
	waitInFlight(t, r, 0)

	// A hijacked connection is no longer a request in flight.
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n")
	waitProgress(t, r, func(inFlight, _ int64) bool { return inFlight == 0 })
	step <- "close"
	waitProgress(t, r, func(int64, int64) bool { return r.served.Load() == 2 }) // the hijacking handler returned

	// A handler that only waits makes no progress, and is labelled.
	_, before := r.stuck()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.Get(srv.URL + "/wait"); err == nil {
			resp.Body.Close()
		}
	}()
	<-labels
	var prof strings.Builder
	pprof.Lookup("goroutine").WriteTo(&prof, 1)
	if want := `"` + guard.LabelPath + `":"/wait"`; !strings.Contains(prof.String(), want) {
		t.Errorf("no goroutine labelled %s: the profile is\n%s", want, prof.String())
	}
	if inFlight, progress := r.stuck(); inFlight != 1 || progress != before {
		t.Errorf("a waiting handler: in flight %d, progress %d → %d; want 1 and no progress", inFlight, before, progress)
	}
	step <- "done"
	<-done
}

func waitInFlight(t *testing.T, r *requests, n int64) {
	t.Helper()
	waitProgress(t, r, func(inFlight, _ int64) bool { return inFlight == n })
}

func waitProgress(t *testing.T, r *requests, ok func(inFlight, progress int64) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(r.stuck()) {
		if time.Now().After(deadline) {
			inFlight, progress := r.stuck()
			t.Fatalf("in flight %d, progress %d", inFlight, progress)
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
}
