//go:build linux

package supervisorproc

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/control"
	"github.com/clusterflock/clusterflock/supervisor"
)

// controlHarness is a control server on a socket in a private directory,
// whose dispatcher is a fake: every call is answered at once (a pool of 2),
// and a HUP runs onHUP, on its own goroutine, to publish the restart's
// events.
type controlHarness struct {
	s     *controlServer
	path  string
	onHUP func()
}

func newControlHarness(t *testing.T) *controlHarness {
	t.Helper()
	base := runtime.NumGoroutine()
	dir := filepath.Join(t.TempDir(), "ctl")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	h := &controlHarness{path: filepath.Join(dir, "pool.sock")}
	s, err := openControl(h.path, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	calls := make(chan call)
	s.d = &dispatcher{calls: calls}
	s.info = func() control.Status { return control.Status{PID: 7, Addr: "127.0.0.1:1", Migration: "none"} }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { h.answer(calls, stop, &wg) })
	wg.Go(s.serve)
	t.Cleanup(func() {
		s.finish(nil) // the pool has stopped: waits end
		s.Close()
		close(stop)
		wg.Wait()
		waitGoroutines(t, base)
	})
	return h
}

// answer is the fake dispatcher.
func (h *controlHarness) answer(calls <-chan call, stop <-chan struct{}, wg *sync.WaitGroup) {
	for {
		select {
		case c := <-calls:
			c.result <- answer{snap: supervisor.Snapshot{Desired: 2}}
			if c.sig == syscall.SIGHUP && h.onHUP != nil {
				wg.Go(h.onHUP)
			}
		case <-stop:
			return
		}
	}
}

// waitGoroutines fails the test unless the goroutines are back to base
// within 5 s: nothing the server started outlives it.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after the server closed, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// subscribers waits until the event bus has n subscribers (the requests
// waiting on events), failing the test after 5 s.
func (h *controlHarness) subscribers(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.s.bus.mu.Lock()
		got := len(h.s.bus.subs)
		h.s.bus.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests wait on events, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// dial connects, sends in (and, if halfClose, shuts the connection for
// writing), and returns the connection and a reader of its replies.
func (h *controlHarness) dial(t *testing.T, in string, halfClose bool) (*net.UnixConn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: h.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	return c, bufio.NewReader(c)
}

func readReply(t *testing.T, br *bufio.Reader) control.Reply {
	t.Helper()
	line, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading a reply: %v (read %q)", err, line)
	}
	var r control.Reply
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return r
}

// A client that shuts its side for writing after its request hears the
// real outcome of a reload that ends after the half-close.
func TestControlHalfCloseReload(t *testing.T) {
	h := newControlHarness(t)
	release := make(chan struct{})
	h.onHUP = func() {
		h.s.bus.publish(supervisor.Event{Kind: supervisor.EventStop, Reason: supervisor.ReasonReplaced, Worker: supervisor.Worker{ID: 1, Pid: 11}})
		<-release
		h.s.bus.publish(supervisor.Event{Kind: supervisor.EventExit, Worker: supervisor.Worker{ID: 1, Pid: 11}})
		h.s.bus.publish(supervisor.Event{Kind: supervisor.EventRestart, Reason: "done"})
	}
	_, br := h.dial(t, `{"v":1,"op":"reload"}`+"\n", true)
	if r := readReply(t, br); r.Done || r.Progress != "slot 0: worker 11 replaced" {
		t.Fatalf("first reply %+v, want the progress of the reload", r)
	}
	close(release)
	if r := readReply(t, br); !r.Done || !r.OK || r.Error != "" {
		t.Fatalf("outcome %+v, want done and ok", r)
	}
}

// Requests that end with the client's input, without a newline, are
// answered; what ends before a request gets an error naming the problem.
func TestControlEndOfInput(t *testing.T) {
	h := newControlHarness(t)
	for _, tc := range []struct{ in, wantErr string }{
		{`{"v":1,"op":"status"}`, ""},
		{`{"v":1,"op":"status"}` + "\n\n", ""},
		{"", "no request before the end of input"},
		{"   \n", "malformed request"},
		{`{"v":1,"op":"sta`, "malformed request"},
		{`{"v":1,"op":"status","op":"stop"}` + "\n", `duplicate key "op"`},
		{`{"v":1,"op":"status"}` + "\n" + `{"v":1,"op":"stop"}` + "\n", "one request per connection"},
		{"\x00\xff garbage\n", "malformed request"},
	} {
		_, br := h.dial(t, tc.in, true)
		r := readReply(t, br)
		switch {
		case tc.wantErr == "" && (!r.Done || !r.OK || r.Status == nil || r.Status.Desired != 2):
			t.Errorf("%q: reply %+v, want the status", tc.in, r)
		case tc.wantErr != "" && (!r.Done || r.OK || !strings.Contains(r.Error, tc.wantErr)):
			t.Errorf("%q: reply %+v, want an error saying %q", tc.in, r, tc.wantErr)
		}
	}
}

// A request longer than control.MaxLine is refused without the server
// reading it all; the client's write fails or completes, never hangs.
func TestControlHugeRequest(t *testing.T) {
	h := newControlHarness(t)
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: h.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte(strings.Repeat("x", 4*control.MaxLine)))
		wrote <- err
	}()
	r := readReply(t, bufio.NewReader(c))
	if r.OK || !strings.Contains(r.Error, "longer than") {
		t.Errorf("reply %+v, want an error saying the request is too long", r)
	}
	if err := <-wrote; err == nil {
		t.Log("the client wrote it all before the server closed")
	}
}

// An events stream goes on after the client's half-close, and ends once
// the client closes; a client that closes at once ends its request too.
func TestControlEventsHangUp(t *testing.T) {
	h := newControlHarness(t)
	c, br := h.dial(t, `{"v":1,"op":"events"}`+"\n", true)
	h.subscribers(t, 1)
	h.s.bus.publish(supervisor.Event{Kind: supervisor.EventSpawn, Worker: supervisor.Worker{ID: 3, Pid: 33}})
	if r := readReply(t, br); r.Event == nil || r.Event.Kind != "spawn" || r.Event.PID != 33 {
		t.Fatalf("reply %+v, want the spawn event after the half-close", r)
	}
	c.Close()
	h.subscribers(t, 0)

	c, _ = h.dial(t, `{"v":1,"op":"events"}`+"\n", false)
	h.subscribers(t, 1)
	c.Close()
	h.subscribers(t, 0)
}
