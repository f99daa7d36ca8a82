//go:build linux

package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

// uploadHandler is the handler of helper mode "upload": it reads the
// request's body and answers its length and the worker's pid.
func uploadHandler() http.Handler {
	pid := os.Getpid()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %d", n, pid)
	})
}

// pacedBody is an upload of size bytes that gives chunk bytes per tick.
type pacedBody struct {
	left, chunk int
	tick        <-chan time.Time
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	<-b.tick
	n := min(len(p), b.chunk, b.left)
	for i := range n {
		p[i] = 'x'
	}
	b.left -= n
	return n, nil
}

// TestSlowUpload: a healthy upload of 16 KiB at 2 KiB/s (512 bytes every
// 250 ms, on a real socket) to a handler that reads it, with StuckTimeout
// 1 s: reading the body is progress, so it is answered 200 by the worker
// that began it, and no worker is found stuck or replaced.
func TestSlowUpload(t *testing.T) {
	const size, chunk, every = 16 << 10, 512, 250 * time.Millisecond
	p := startPool(t, poolConfig{mode: "upload", workers: 1, heartbeat: 400 * time.Millisecond, shutdown: time.Second,
		env: []string{envStuck + "=1s"}})
	mark := p.mark()
	tick := time.NewTicker(every)
	defer tick.Stop()
	req, err := http.NewRequest("POST", "http://"+p.addr+"/upload", &pacedBody{left: size, chunk: chunk, tick: tick.C})
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	began := time.Now()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("the slow upload: %v (stuck events: %v)", err, p.events(mark, supervisor.EventStuck))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	took := time.Since(began)
	t.Logf("16 KiB at 2 KiB/s: %s %q after %v", resp.Status, body, took.Round(time.Millisecond))
	var n, pid int
	fmt.Sscanf(string(body), "%d %d", &n, &pid)
	if resp.StatusCode != http.StatusOK || n != size {
		t.Errorf("the slow upload: %s %q, want 200 and %d bytes read", resp.Status, body, size)
	}
	if want := size / chunk * every; took < want-every {
		t.Errorf("the upload took %v, want about %v: it was not paced", took, want)
	}
	for _, kind := range []supervisor.EventKind{supervisor.EventStuck, supervisor.EventStop, supervisor.EventExit} {
		if evs := p.events(mark, kind); len(evs) != 0 {
			t.Errorf("%d %s events during a healthy slow upload: %+v", len(evs), kind, evs)
		}
	}
	if got, err := p.get("/"); err != nil || got != "0 "+strconv.Itoa(pid) {
		t.Errorf("after the upload: %q (%v), want the same worker %d", got, err, pid)
	}
}
