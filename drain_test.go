package clusterflock

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
)

// serveForDrain runs httpServe(h) on a loopback listener; stop starts its
// drain and returns what the drain returned.
func serveForDrain(t *testing.T, h http.Handler, shutdown time.Duration) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := options{Options: Options{ShutdownTimeout: shutdown, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), lameDuckKey{}, newLameDuck()))
	done := make(chan error, 1)
	go func() { done <- httpServe(h, o, newRequests(o), nil)(ctx, ln) }()
	var once sync.Once
	var res error
	stop = func() error {
		once.Do(func() {
			cancel()
			res = <-done
		})
		return res
	}
	t.Cleanup(func() { stop() })
	return ln.Addr().String(), stop
}

// keepAliveGet sends a GET on c and reads the response.
func keepAliveGet(t *testing.T, c net.Conn, br *bufio.Reader) (*http.Response, error) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return nil, err
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res, nil
}

// idleKeepAlive serves a trivial handler and leaves one keep-alive
// connection idle after one answered request.
func idleKeepAlive(t *testing.T, shutdown time.Duration) (string, func() error, net.Conn, *bufio.Reader) {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	addr, stop := serveForDrain(t, h, shutdown)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if res, err := keepAliveGet(t, c, br); err != nil || res.Close {
		t.Fatalf("before the drain: %v, close %v; want a keep-alive answer", err, res != nil && res.Close)
	}
	return addr, stop, c, br
}

// TestDrainKeepsIdleKeepAlive: a keep-alive connection idle when the drain
// starts stays open for its client's next request, which is answered with
// Connection: close; SetKeepAlivesEnabled(false) closed it at once.
func TestDrainKeepsIdleKeepAlive(t *testing.T) {
	addr, stop, c, br := idleKeepAlive(t, 2*time.Second)
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The drain has begun once a fresh connection is refused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		d.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts 5 s after the stop")
		}
		time.Sleep(time.Millisecond)
	}
	res, err := keepAliveGet(t, c, br)
	if err != nil {
		t.Fatalf("the next request on an idle keep-alive connection during the drain: %v; want an answer", err)
	}
	if res.StatusCode != 200 || !res.Close {
		t.Errorf("the answer during the drain: %d, Connection: close %v; want 200 and close", res.StatusCode, res.Close)
	}
	if err := <-stopped; err != nil {
		t.Errorf("drain: %v", err)
	}
}

// TestDrainClosesWhatStaysIdle: a connection that sends nothing through the
// grace is closed, and the drain ends within ShutdownTimeout.
func TestDrainClosesWhatStaysIdle(t *testing.T) {
	const shutdown = time.Second
	_, stop, _, br := idleKeepAlive(t, shutdown)
	begin := time.Now()
	if err := stop(); err != nil {
		t.Errorf("drain: %v", err)
	}
	took := time.Since(begin)
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("the idle connection after the drain: %v; want EOF", err)
	}
	grace := newDrainTimes(proto.NewTiming(shutdown, 10*time.Second)).grace
	if took < grace || took > shutdown {
		t.Errorf("the drain took %v; want the grace (%v) at least, ShutdownTimeout (%v) at most", took, grace, shutdown)
	}
}

// TestDrainWaitsForHijacked: a hijacked connection (a websocket) counts
// until its handler closes it; one that outlives the drain's end is closed
// then, before ShutdownTimeout.
func TestDrainWaitsForHijacked(t *testing.T) {
	for _, tc := range []struct {
		name string
		hold time.Duration // how long the handler keeps its connection
	}{{"closes itself", 600 * time.Millisecond}, {"outlives ShutdownTimeout", 5 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			const shutdown = 1500 * time.Millisecond
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
				brw.Flush()
				select {
				case <-time.After(tc.hold):
					io.WriteString(c, "bye\n")
					c.Close()
				case <-r.Context().Done():
				}
			})
			addr, stop := serveForDrain(t, h, shutdown)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
			br := bufio.NewReader(c)
			if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "101") {
				t.Fatalf("upgrade: %q %v", line, err)
			}
			br.ReadString('\n')
			begin := time.Now()
			if err := stop(); err != nil {
				t.Errorf("drain: %v", err)
			}
			took := time.Since(begin)
			rest, _ := io.ReadAll(br)
			closes := tc.hold < shutdown
			switch {
			case closes && !strings.Contains(string(rest), "bye"):
				t.Errorf("the hijacked exchange was cut after %v (read %q); want it finished", took, rest)
			case closes && took < tc.hold-100*time.Millisecond:
				t.Errorf("the drain ended after %v, before the hijacked connection closed (%v)", took, tc.hold)
			case !closes && (took > shutdown || took < shutdown/2):
				t.Errorf("the drain ended after %v; want the hijacked connection closed near ShutdownTimeout (%v)", took, shutdown)
			}
		})
	}
}

// TestDrainStarted: the channel closes when the worker's drain begins.
func TestDrainStarted(t *testing.T) {
	if DrainStarted(context.Background()) != nil {
		t.Error("DrainStarted outside a worker is not nil")
	}
	d := newLameDuck()
	ctx := context.WithValue(context.Background(), lameDuckKey{}, d)
	select {
	case <-DrainStarted(ctx):
		t.Fatal("closed before the drain")
	default:
	}
	if Draining(ctx) {
		t.Fatal("Draining before the drain")
	}
	d.begin()
	d.drainStarts()
	select {
	case <-DrainStarted(ctx):
	default:
		t.Fatal("not closed once the drain began")
	}
	if !Draining(ctx) {
		t.Fatal("not Draining once the drain began")
	}
}

// TestDrainFinishesSlowUpload: an upload still arriving when the drain
// starts is read to its end and answered, within ShutdownTimeout.
func TestDrainFinishesSlowUpload(t *testing.T) {
	const size = 16 << 10
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	addr, stop := serveForDrain(t, h, 3*time.Second)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	chunk := make([]byte, 1<<10)
	c.Write(chunk)
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	tick := time.NewTicker(50 * time.Millisecond) // 1 KiB every 50 ms: 0.75 s for the rest
	defer tick.Stop()
	for sent := len(chunk); sent < size; sent += len(chunk) {
		<-tick.C
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("the upload cut after %d bytes, during the drain: %v", sent, err)
		}
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the slow upload's answer: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(b) != fmt.Sprint(size) {
		t.Errorf("the slow upload's answer: %d %q; want 200 %q", res.StatusCode, b, fmt.Sprint(size))
	}
	if err := <-stopped; err != nil {
		t.Errorf("drain: %v", err)
	}
}
