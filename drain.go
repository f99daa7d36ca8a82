package clusterflock

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
)

const (
	// newConnDrainLimit bounds the wait for accepted connections whose
	// first request has not reached its handler yet, before Shutdown
	// (which would close them unanswered).
	newConnDrainLimit = time.Second
	// maxKeepAliveGrace bounds how long a draining worker keeps an idle
	// keep-alive connection open for its client's next request.
	maxKeepAliveGrace = 5 * time.Second
	// drainPoll is how often a draining worker looks at what net/http
	// reports no change of: hijacked connections (websockets) that their
	// handlers have closed, and the age of HTTP/2 GOAWAYs.
	drainPoll = 10 * time.Millisecond
)

// drainTimes are the deadlines of one worker's drain, from the moment it
// was asked to stop.
type drainTimes struct {
	fresh time.Duration // first requests of accepted connections: read
	grace time.Duration // idle keep-alive connections: their next request
	// secondGoAway bounds the wait for every HTTP/2 connection's first
	// GOAWAY to be h2GoAwayGap old, before Go's own.
	secondGoAway time.Duration
	hijacked     time.Duration // hijacked connections: closed
	// requests bounds the wait for requests in flight: past
	// ShutdownTimeout, so that a request that outlives it gets its worker
	// killed by the supervisor, which says so.
	requests time.Duration
}

// newDrainTimes derives a drain's deadlines from the pool's timing.
// Hijacked connections are closed a little before ShutdownTimeout, by the
// worker itself rather than its supervisor's kill.
func newDrainTimes(t proto.Timing) drainTimes {
	margin := min(100*time.Millisecond, t.Shutdown/10)
	grace := min(maxKeepAliveGrace, t.Shutdown/2)
	return drainTimes{
		// A quarter of ShutdownTimeout at most: what is still fresh
		// then (a slowloris, a client that connected and says nothing)
		// is closed, or Shutdown would wait for it (it counts a new
		// connection as active for 5 s) past the supervisor's kill.
		fresh: min(newConnDrainLimit, t.Shutdown/4),
		grace: grace,
		// The grace plus the gap, within three quarters of
		// ShutdownTimeout (the streams in flight then finish).
		secondGoAway: max(grace, min(grace+h2GoAwayGap, t.Shutdown*3/4)),
		hijacked:     t.Shutdown - margin,
		requests:     t.WorkerStop,
	}
}

// drain stops srv without losing a request that reached it, as Envoy and
// HAProxy drain:
//
//  1. From now on every response says Connection: close; the listener
//     closes, and drain waits for Serve to return (served, unless nil: it
//     has), so that every accepted connection is tracked.
//  2. It waits until each accepted connection has had its first request
//     read (Shutdown would close those without an answer).
//  3. Idle keep-alive connections stay open through a grace, so that a
//     client sending its next request on one is answered (with
//     Connection: close) instead of reset; only what stays idle through
//     the grace is closed.
//  4. HTTP/2 connections get a GOAWAY that forbids new streams at once
//     (see h2drain.go), and Go's own with the last stream after the grace.
//  5. Shutdown finishes in-flight requests; hijacked connections
//     (websockets) count until their handlers close them or the drain's
//     end, when they are closed.
func drain(srv *http.Server, ln net.Listener, conns *connTracker, t proto.Timing, served <-chan error) error {
	start := time.Now()
	times := newDrainTimes(t)
	conns.closeKeepAlives()
	conns.goAwayH2()
	ln.Close()
	if served != nil {
		select {
		case <-served: // Serve marks a connection StateNew before it accepts the next
		case <-time.After(times.fresh):
		}
	}
	fresh, cancelFresh := context.WithDeadline(context.Background(), start.Add(times.fresh))
	conns.wait(fresh, func() bool { return len(conns.fresh) == 0 })
	cancelFresh()
	conns.closeFresh()

	grace, cancelGrace := context.WithDeadline(context.Background(), start.Add(times.grace))
	conns.wait(grace, func() bool { return conns.open == len(conns.h2) })
	cancelGrace()
	gap, cancelGap := context.WithDeadline(context.Background(), start.Add(times.secondGoAway))
	conns.waitFirstGoAways(gap) // the second GOAWAY a round trip after the first
	cancelGap()

	hijacked := make(chan struct{})
	go func() {
		defer close(hijacked)
		ctx, cancel := context.WithDeadline(context.Background(), start.Add(times.hijacked))
		defer cancel()
		conns.waitHijacked(ctx)
		conns.closeHijacked()
	}()
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(times.requests))
	defer cancel()
	err := shutdown(ctx, srv, conns)
	<-hijacked
	return err
}

// shutdown runs srv.Shutdown until ctx is done, and closes what remains.
func shutdown(ctx context.Context, srv *http.Server, conns *connTracker) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	// Shutdown polls for idle connections at growing intervals (up to
	// 500 ms), and Go's HTTP/2 server keeps a connection a second after
	// its GOAWAY; return as soon as the last connection has closed or is a
	// quiet HTTP/2 one instead.
	if conns.waitQuiet(ctx) {
		cancel()
		<-shut
		return nil
	}
	if err := <-shut; err != nil {
		srv.Close()
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

// connTracker follows a server's connections through a drain: those
// accepted whose first request has not reached its handler (Go's
// Server.Shutdown closes such a connection without an answer, even after
// it read the request: net/http checks shuttingDown between reading a
// request and calling the handler), those open, and those hijacked.
type connTracker struct {
	// closing: responses from now on say Connection: close.
	closing  atomic.Bool
	mu       sync.Mutex
	fresh    map[net.Conn]struct{}
	hijacked map[net.Conn]struct{} // until their handlers close them
	h2       map[net.Conn]*h2Conn  // HTTP/2, by the connection accepted
	pruneAt  int                   // prune hijacked of closed ones at this size
	open     int                   // connections not yet closed or hijacked
	change   chan struct{}         // closed and replaced on a change someone waits for
}

type trackedConnKey struct{}

// trackedConn is in every request's context: its connection, and whether a
// handler has started on it.
type trackedConn struct {
	c       net.Conn
	started atomic.Bool
}

// connContext returns the server's ConnContext: user's, then ours.
func (c *connTracker) connContext(user func(context.Context, net.Conn) context.Context) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, conn net.Conn) context.Context {
		if user != nil {
			ctx = user(ctx, conn)
		}
		return context.WithValue(ctx, trackedConnKey{}, &trackedConn{c: conn})
	}
}

// wrap marks a connection started when its first handler runs, and, once
// keep-alives are off, has HTTP/1 responses say Connection: close (net/http
// then closes the connection after the response).
func (c *connTracker) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t, ok := r.Context().Value(trackedConnKey{}).(*trackedConn); ok && t.started.CompareAndSwap(false, true) {
			c.remove(t.c)
		}
		if c.closing.Load() && r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// closeKeepAlives has every response from now on say Connection: close. It
// closes no connection: an idle one stays open for its client's next
// request, which is answered.
func (c *connTracker) closeKeepAlives() { c.closing.Store(true) }

func (c *connTracker) track(conn net.Conn, s http.ConnState) {
	if h, ok := h2Of(conn); ok { // Go's HTTP/2 server: streams open or not
		h.setIdle(s == http.StateIdle)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s {
	case http.StateNew:
		if c.fresh == nil {
			c.fresh = make(map[net.Conn]struct{})
		}
		c.fresh[conn] = struct{}{}
		c.open++
	case http.StateHijacked:
		c.addHijacked(conn)
		fallthrough
	case http.StateClosed:
		delete(c.fresh, conn)
		delete(c.h2, conn)
		c.open--
		c.changed()
	}
}

// addH2 returns the wrapper of an HTTP/2 connection (raw, as accepted;
// under, what HTTP/2 is read from and written to: raw, or its TLS), and
// follows it. One that arrives while the drain has begun gets its first
// GOAWAY at once.
func (c *connTracker) addH2(raw, under net.Conn) net.Conn {
	h := newH2Conn(under)
	c.mu.Lock()
	if c.h2 == nil {
		c.h2 = make(map[net.Conn]*h2Conn)
	}
	c.h2[raw] = h
	c.mu.Unlock()
	if c.closing.Load() {
		go h.goAway()
	}
	if _, ok := under.(*tls.Conn); ok {
		return h2TLSConn{h}
	}
	return h
}

// goAwayH2 has every HTTP/2 connection's first GOAWAY written (each in a
// goroutine of its own: a client that does not read blocks its write).
func (c *connTracker) goAwayH2() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.h2 {
		go h.goAway()
	}
}

// waitFirstGoAways waits until every HTTP/2 connection's first GOAWAY was
// written at least h2GoAwayGap ago, or ctx is done.
func (c *connTracker) waitFirstGoAways(ctx context.Context) {
	poll(ctx, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		now := time.Now()
		for _, h := range c.h2 {
			if !h.firstSince(now, h2GoAwayGap) {
				return false
			}
		}
		return true
	})
}

// waitQuiet waits until every connection has closed but quiet HTTP/2 ones
// (see h2Conn.quiet), which it closes, and reports whether that happened
// before ctx was done.
func (c *connTracker) waitQuiet(ctx context.Context) bool { return poll(ctx, c.closeQuiet) }

// poll reports whether cond became true, looking every drainPoll, before
// ctx was done.
func poll(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// closeQuiet closes the quiet HTTP/2 connections if every open connection
// is one, and reports whether it did (or none is open).
func (c *connTracker) closeQuiet() bool {
	c.mu.Lock()
	now := time.Now()
	var quiet []net.Conn
	for _, h := range c.h2 {
		if h.quiet(now) {
			quiet = append(quiet, h)
		}
	}
	all := len(quiet) >= c.open
	c.mu.Unlock()
	if !all {
		return false
	}
	for _, h := range quiet {
		closeNow(h)
	}
	return true
}

// closeNow closes conn without waiting on its peer: a TLS connection's
// close_notify waits up to 5 s for a client that does not read.
func closeNow(conn net.Conn) {
	if h, ok := h2Of(conn); ok {
		conn = h.Conn
	}
	if n, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = n.NetConn()
	}
	conn.Close()
}

// taken returns the connections of *set (and empties it, if clear), with
// c.mu held: they are closed without it.
func (c *connTracker) taken(set *map[net.Conn]struct{}, clear bool) []net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	conns := make([]net.Conn, 0, len(*set))
	for conn := range *set {
		conns = append(conns, conn)
		if clear {
			delete(*set, conn)
		}
	}
	return conns
}

// addHijacked records a hijacked connection; c.mu is held. The set is
// pruned of closed connections whenever it has doubled since the last
// prune, so that it stays within twice the connections still hijacked.
func (c *connTracker) addHijacked(conn net.Conn) {
	if c.hijacked == nil {
		c.hijacked = make(map[net.Conn]struct{})
	}
	c.hijacked[conn] = struct{}{}
	if len(c.hijacked) < c.pruneAt {
		return
	}
	c.pruneHijacked()
	c.pruneAt = max(64, 2*len(c.hijacked))
}

// pruneHijacked forgets the hijacked connections that have been closed;
// c.mu is held.
func (c *connTracker) pruneHijacked() {
	for conn := range c.hijacked {
		if connClosed(conn) {
			delete(c.hijacked, conn)
		}
	}
}

// closeFresh closes the connections whose first request has not reached a
// handler.
func (c *connTracker) closeFresh() {
	for _, conn := range c.taken(&c.fresh, false) {
		closeNow(conn)
	}
}

func (c *connTracker) remove(conn net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.fresh[conn]; ok {
		delete(c.fresh, conn)
		c.changed()
	}
}

// changed wakes the waiters; c.mu is held.
func (c *connTracker) changed() {
	if c.change != nil {
		close(c.change)
		c.change = nil
	}
}

// wait waits until cond (called with c.mu held) is true, and reports
// whether it became true before ctx was done.
func (c *connTracker) wait(ctx context.Context, cond func() bool) bool {
	for {
		c.mu.Lock()
		if cond() {
			c.mu.Unlock()
			return true
		}
		if c.change == nil {
			c.change = make(chan struct{})
		}
		ch := c.change
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// waitHijacked waits until every hijacked connection has been closed by
// its handler, or ctx is done. net/http says nothing when a hijacked
// connection closes, so it looks every drainPoll.
func (c *connTracker) waitHijacked(ctx context.Context) {
	poll(ctx, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.pruneHijacked()
		return len(c.hijacked) == 0
	})
}

// closeHijacked closes the hijacked connections still open.
func (c *connTracker) closeHijacked() {
	for _, conn := range c.taken(&c.hijacked, true) {
		closeNow(conn)
	}
}

// connClosed reports whether conn (or, for a TLS connection, the
// connection under it) has been closed. A connection it cannot look into
// counts as open.
func connClosed(conn net.Conn) bool {
	if n, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = n.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	return raw.Control(func(uintptr) {}) != nil
}
