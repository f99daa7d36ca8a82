//go:build linux

package integration_test

// Hostile clients (issue "Reliability proven"), against the default server
// settings: slowloris connections (headers sent byte by byte, slowly),
// thousands of idle keep-alive connections, headers over 1 MB and
// connect-and-close storms, all at once, while a well-behaved client keeps
// being answered (0 failures), no worker dies, and a graceful stop (TERM)
// with all of it going on exits within ShutdownTimeout and a small margin.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

const (
	hostileIdle      = 2000                   // idle keep-alive connections, if the descriptor limit allows
	hostileSlow      = 100                    // slowloris connections
	hostileSlowEvery = 200 * time.Millisecond // one byte of header each
	hostileBig       = 1<<20 + 64<<10         // bytes of one header: over Go's 1 MB MaxHeaderBytes
	hostilePhase     = 4 * time.Second        // all of it at once, before the TERM
	hostileBound     = 30 * time.Second       // every hostile loop stops by then
	shutdownDefault  = time.Second            // Options.ShutdownTimeout's default
	stopMargin       = 3 * time.Second        // "a small margin" on a busy machine (a killed -race worker with 1,000 sockets takes up to ~1 s to die here)
)

// hostile counts what the hostile clients did and saw.
type hostile struct {
	mu     sync.Mutex
	counts map[string]int
}

func (h *hostile) add(k string) {
	h.mu.Lock()
	h.counts[k]++
	h.mu.Unlock()
}

func (h *hostile) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return countsString(h.counts)
}

func TestHostileClients(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2})
	t.Cleanup(func() { saveLog(t, p) })
	mig := p.waitFor("supervisor starting", nil, time.Second).str("migration")
	good := startTraffic(t, p.addr, 2, 2, hostileBound)
	good.waitAnswered(200, 10*time.Second)

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	idleN := min(hostileIdle, int(lim.Cur)-1000)
	if idleN < hostileIdle {
		t.Logf("RLIMIT_NOFILE %d (hard %d): %d idle keep-alive connections instead of %d", lim.Cur, lim.Max, idleN, hostileIdle)
	}
	if idleN < 100 {
		t.Skipf("SKIP: RLIMIT_NOFILE %d leaves no room for idle connections", lim.Cur)
	}

	h := &hostile{counts: map[string]int{}}
	quit := make(chan struct{})
	stop := sync.OnceFunc(func() { close(quit) })
	bound := time.Now().Add(hostileBound)
	over := func() bool {
		select {
		case <-quit:
			return true
		default:
			return time.Now().After(bound)
		}
	}
	var wg sync.WaitGroup
	var conns sync.Map // every hostile connection, closed at the end
	track := func(c net.Conn) { conns.Store(c, true) }
	t.Cleanup(func() {
		stop()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	mark := p.mark()
	phase := time.Now()

	// Idle keep-alive connections: one request each, then silence. A reader
	// notes when the server closes each.
	var idleOpen, idleClosed atomic.Int64
	idleClosedAt := make(chan time.Time, idleN)
	var opening sync.WaitGroup
	next := make(chan struct{}, idleN)
	for range idleN {
		next <- struct{}{}
	}
	close(next)
	for range 16 {
		opening.Add(1)
		wg.Go(func() {
			defer opening.Done()
			d := &net.Dialer{Timeout: loadDeadline}
			for range next {
				if over() {
					return
				}
				c, err := d.Dial("tcp", p.addr)
				if err != nil {
					h.add("idle: dial: " + errKind(err))
					continue
				}
				track(c)
				c.SetDeadline(time.Now().Add(loadDeadline))
				br := bufio.NewReader(c)
				if _, err := io.WriteString(c, keepAliveRequest); err != nil {
					h.add("idle: write: " + errKind(err))
					continue
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					h.add("idle: read: " + errKind(err))
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Close {
					h.add("idle: answer " + resp.Status)
					continue
				}
				c.SetDeadline(time.Time{})
				idleOpen.Add(1)
				wg.Go(func() {
					_, err := br.ReadByte() // blocks until the server closes it
					if over() {
						return
					}
					idleClosed.Add(1)
					idleClosedAt <- time.Now()
					h.add("idle: closed by the server: " + errKind(err))
				})
			}
		})
	}

	opened := make(chan struct{})
	go func() { opening.Wait(); close(opened) }()
	select {
	case <-opened:
	case <-time.After(hostileBound):
		t.Fatalf("opening %d idle connections took more than %v (%d open)", idleN, hostileBound, idleOpen.Load())
	}
	t.Logf("%d idle keep-alive connections open after %v", idleOpen.Load(), time.Since(phase).Round(time.Millisecond))
	phase = time.Now()

	// Slowloris: a request line and headers, one byte every 200 ms, never
	// finished; each connection lives 1–4 s (or until the server closes it),
	// then the next one opens, so that some are always young (Go's Shutdown
	// closes a connection that never sent a whole request once it is 5 s
	// old, not before).
	for i := range hostileSlow {
		wg.Go(func() {
			for k := 0; k < 40 && !over(); k++ {
				c, err := net.DialTimeout("tcp", p.addr, loadDeadline)
				if err != nil {
					h.add("slowloris: dial: " + errKind(err))
					return
				}
				track(c)
				life := time.Now().Add(time.Second + time.Duration((i*7919+k*104729)%3000)*time.Millisecond)
				msg := fmt.Sprintf("GET /slowloris/%d/%d HTTP/1.1\r\nHost: clusterflock\r\nX-Slow: %s", i, k, strings.Repeat("s", 1000))
				for j := 0; j < len(msg) && !over() && time.Now().Before(life); j++ {
					c.SetWriteDeadline(time.Now().Add(loadDeadline))
					if _, err := c.Write([]byte{msg[j]}); err != nil {
						h.add("slowloris: closed by the server (write: " + errKind(err) + ")")
						break
					}
					time.Sleep(hostileSlowEvery) // the attack's pace
				}
				if time.Now().After(life) {
					h.add("slowloris: closed by the client after its life")
				}
				c.Close()
				conns.Delete(c)
			}
		})
	}

	// Headers over 1 MB: the server answers 431 and closes, or resets the
	// connection while the client still writes.
	big := "GET / HTTP/1.1\r\nHost: clusterflock\r\nX-Big: " + strings.Repeat("b", hostileBig) + "\r\n\r\n"
	for range 2 {
		wg.Go(func() {
			for range 50 {
				if over() {
					return
				}
				c, err := net.DialTimeout("tcp", p.addr, loadDeadline)
				if err != nil {
					h.add("big header: dial: " + errKind(err))
					continue
				}
				track(c)
				c.SetDeadline(time.Now().Add(loadDeadline))
				_, werr := io.WriteString(c, big)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				switch {
				case err == nil:
					h.add("big header: answer " + resp.Status)
				case werr != nil:
					h.add("big header: write: " + errKind(werr))
				default:
					h.add("big header: read: " + errKind(err))
				}
				c.Close()
				conns.Delete(c)
			}
		})
	}

	// Connect-and-close storms: close at once, reset (SO_LINGER 0), or close
	// after half a request line.
	for g := range 4 {
		wg.Go(func() {
			d := &net.Dialer{Timeout: loadDeadline}
			for i := range 2500 {
				if over() {
					return
				}
				c, err := d.Dial("tcp", p.addr)
				if err != nil {
					h.add("storm: dial: " + errKind(err))
					continue
				}
				switch (g + i) % 3 {
				case 0:
					h.add("storm: connect, close")
				case 1:
					c.(*net.TCPConn).SetLinger(0)
					h.add("storm: connect, reset")
				case 2:
					io.WriteString(c, "GET / HT")
					h.add("storm: connect, half a request line, close")
				}
				c.Close()
			}
		})
	}

	// All of it for hostilePhase, while the well-behaved client is answered.
	if rest := hostilePhase - time.Since(phase); rest > 0 {
		time.Sleep(rest) // the attack's duration, not a synchronisation
	}
	good.halt()
	r := tally(good.snapshot())
	var lat []time.Duration
	for _, a := range good.snapshot() {
		if a.start.After(phase) && a.failure == "" {
			lat = append(lat, a.end.Sub(a.start))
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		t.Logf("well-behaved client, %d answers during the attack: latency p50 %v, p99 %v, max %v", len(lat),
			lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	}
	t.Logf("well-behaved client (2 Connection: close, 2 keep-alive): %v", r)
	if r.lost > 0 || r.retried > 0 {
		t.Errorf("the well-behaved client failed %d times and had %d keep-alive connections closed under it, want 0: %v", r.lost, r.retried, r)
	}
	if len(lat) < 20 {
		t.Errorf("the well-behaved client was answered only %d times during the attack", len(lat))
	}
	for _, e := range p.events(mark, "") {
		if e.Kind == supervisor.EventExit || e.Kind == supervisor.EventKill {
			t.Errorf("during the attack: worker %d %s (%s %s)", e.Worker.Pid, e.Kind, e.Reason, e.Status)
		}
	}
	workers := p.workerPids()
	idleBefore := idleClosed.Load()

	// TERM with all of it going on.
	stopMark := p.mark()
	start := time.Now()
	p.signal(syscall.SIGTERM)
	code, runErr := p.wait(shutdownDefault + 15*time.Second)
	took := time.Since(start)
	t.Logf("TERM during the attack (migration %s, workers %v): the supervisor exited %d after %v (Run: %q)", mig, workers, code, took.Round(time.Millisecond), runErr)
	if limit := shutdownDefault + stopMargin; took > limit {
		t.Errorf("the graceful stop took %v, want at most ShutdownTimeout %v + %v", took.Round(time.Millisecond), shutdownDefault, stopMargin)
	}
	// Graceful means no worker is killed: a connection that has not sent a
	// whole request holds no request in flight.
	if code != 0 {
		t.Errorf("DEFECT: the graceful stop under attack killed workers and Run failed (exit %d: %q): a worker waits up to 1 s (the default ShutdownTimeout) for connections that never send a whole request (slowloris), then Go's Shutdown waits for those younger than 5 s, so the supervisor kills it at ShutdownTimeout", code, runErr)
	}
	for _, e := range p.events(stopMark, "") {
		switch e.Kind {
		case supervisor.EventKill:
			t.Logf("at the stop: worker %d killed: %s", e.Worker.Pid, e.Reason)
		case supervisor.EventExit:
			t.Logf("at the stop: worker %d exited after %v: %s", e.Worker.Pid, e.Uptime.Round(time.Millisecond), e.Status)
		}
	}
	// Every idle connection is closed by now (the workers are gone).
	deadline := time.After(5 * time.Second)
	var last time.Time
	for n := idleBefore; n < idleOpen.Load(); n++ {
		select {
		case at := <-idleClosedAt:
			last = at
		case <-deadline:
			t.Errorf("%d of %d idle keep-alive connections still open 5 s after the supervisor exited", idleOpen.Load()-n, idleOpen.Load())
			n = idleOpen.Load()
		}
	}
	if !last.IsZero() {
		t.Logf("%d idle keep-alive connections closed by the server before the TERM, the other %d within %v of it", idleBefore, idleOpen.Load()-idleBefore, last.Sub(start).Round(time.Millisecond))
	}
	stop()
	t.Logf("hostile clients: %v", h)
	checkNoOrphans(t, p, 5*time.Second)
}
