package clusterflock

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP/2 connections are drained as RFC 9113 §6.8 describes a graceful
// close: a first GOAWAY with the highest stream identifier (2^31-1), so
// that the client opens no more streams, then, at least a round trip
// later, Go's own GOAWAY with the last stream it processed; the streams in
// flight finish, then the connection closes. Go's HTTP/2 server sends only
// the second, so streams a client opened while it was on its way were
// refused (h2load: 68 of 66,322 errored through 3 HUPs). The first is
// written by a wrapper of the connection under Go's HTTP/2 server, which
// follows the frames the server writes so as to put its own between two.
const (
	// h2GoAwayGap is the least time between the two GOAWAYs: a round trip
	// on all but the slowest paths.
	h2GoAwayGap = 200 * time.Millisecond
	// h2Linger is how long a connection that has had the server's GOAWAY
	// and has no stream open stays open before the drain closes it: time
	// for the server to flush the last frames it queued.
	h2Linger = 50 * time.Millisecond
	// http2Preface is what an HTTP/2 client sends first.
	http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	// nextProtoUnencryptedHTTP2 is net/http's TLSNextProto key for HTTP/2
	// without TLS (its unencrypted connection travels in a *tls.Conn).
	nextProtoUnencryptedHTTP2 = "unencrypted_http2"
)

// firstGoAway is a GOAWAY frame (type 7, stream 0) with the last stream
// identifier 2^31-1 and NO_ERROR.
const firstGoAway = "\x00\x00\x08\x07\x00\x00\x00\x00\x00\x7f\xff\xff\xff\x00\x00\x00\x00"

// installH2 puts the drain's wrapper under srv's HTTP/2 connections, when
// srv serves HTTP/2 with the server net/http bundles (a program that set
// its own TLSNextProto keeps it). It has net/http configure HTTP/2 now, by
// serving a listener that fails at once (so the program's BaseContext, if
// any, is called once with it), and wraps the handlers it registered.
func installH2(srv *http.Server, useTLS bool, conns *connTracker) {
	if srv.TLSNextProto != nil || !h2Possible(srv, useTLS) {
		return
	}
	if useTLS {
		srv.ServeTLS(failingListener{}, "", "")
	} else {
		srv.Serve(failingListener{})
	}
	serve, ok := srv.TLSNextProto[nextProtoUnencryptedHTTP2]
	if !ok {
		return
	}
	handoff := func(hs *http.Server, raw net.Conn, c net.Conn, h http.Handler) {
		serve(hs, tls.Client(unencryptedConn{conn: conns.addH2(raw, c)}, nil), h)
	}
	srv.TLSNextProto[nextProtoUnencryptedHTTP2] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		u, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			serve(hs, c, h)
			return
		}
		raw := u.UnencryptedNetConn()
		handoff(hs, raw, raw, h)
	}
	if _, ok := srv.TLSNextProto["h2"]; ok {
		srv.TLSNextProto["h2"] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
			// The unencrypted hand-off expects the preface read.
			if !readPreface(c, hs.ReadHeaderTimeout) {
				c.Close()
				return
			}
			handoff(hs, c, c, h)
		}
	}
}

// h2Possible reports whether srv can serve HTTP/2.
func h2Possible(srv *http.Server, useTLS bool) bool {
	if srv.Protocols == nil {
		return useTLS
	}
	return srv.Protocols.UnencryptedHTTP2() || useTLS && srv.Protocols.HTTP2()
}

// readPreface reads the HTTP/2 client preface from c, within limit (none
// if 0), and reports whether it was one.
func readPreface(c *tls.Conn, limit time.Duration) bool {
	if limit > 0 {
		c.SetReadDeadline(time.Now().Add(limit))
		defer c.SetReadDeadline(time.Time{})
	}
	buf := make([]byte, len(http2Preface))
	if _, err := io.ReadFull(c, buf); err != nil {
		return false
	}
	return bytes.Equal(buf, []byte(http2Preface))
}

// failingListener is a listener whose Accept fails at once.
type failingListener struct{}

func (failingListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (failingListener) Close() error              { return nil }
func (failingListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// unencryptedConn carries an unencrypted connection in a *tls.Conn to
// net/http's HTTP/2 server, as net/http itself does.
type unencryptedConn struct {
	net.Conn // nil: only UnencryptedNetConn is called
	conn     net.Conn
}

func (u unencryptedConn) UnencryptedNetConn() net.Conn { return u.conn }

// h2Conn is an HTTP/2 connection under Go's server: it follows the frames
// the server writes, and writes the first GOAWAY between two of them.
//
// No lock is held across I/O: a write in progress (the server's, or the
// first GOAWAY) owns the frame state (writing), and a write that finds
// another in progress waits for it. The state the drain and the server's
// ConnState reports read (goAwayAt, idleSince) is atomic, so a client
// that stops reading blocks only the writes to its own connection.
type h2Conn struct {
	net.Conn
	mu      sync.Mutex
	done    sync.Cond // signalled when a write ends
	writing bool      // a write is in progress: it owns what follows
	pending []byte    // to write at the next boundary
	first   bool      // the first GOAWAY is pending or written
	// The frame state, owned by the write in progress.
	hdr       [9]byte // the frame header being written
	hdrN      int     // bytes of hdr written
	left      int     // payload bytes of the current frame still to write
	framed    bool    // the server has written a frame (its SETTINGS come first)
	inHeaders bool    // a header block (HEADERS or PUSH_PROMISE) awaits its END_HEADERS

	firstAt   atomic.Int64 // when the first GOAWAY was written (UnixNano); 0 before
	goAwayAt  atomic.Int64 // when the server's own GOAWAY was written; 0 before
	idleSince atomic.Int64 // since when no stream is open; 0 while one is
}

func newH2Conn(under net.Conn) *h2Conn {
	c := &h2Conn{Conn: under}
	c.done.L = &c.mu
	c.idleSince.Store(time.Now().UnixNano())
	return c
}

// h2TLSConn is an h2Conn over TLS: Go's HTTP/2 server checks the TLS
// state and gives it to requests.
type h2TLSConn struct{ *h2Conn }

func (c h2TLSConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(*tls.Conn).ConnectionState()
}

// h2Of returns the h2Conn of a connection Go's HTTP/2 server reports.
func h2Of(c net.Conn) (*h2Conn, bool) {
	switch c := c.(type) {
	case *h2Conn:
		return c, true
	case h2TLSConn:
		return c.h2Conn, true
	}
	return nil, false
}

// acquire waits until no write is in progress and makes this one the
// write in progress; it returns what is pending.
func (c *h2Conn) acquire() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.writing {
		c.done.Wait()
	}
	c.writing = true
	return c.pending
}

// release ends the write in progress; what became pending meanwhile is
// written first, if the stream is at a boundary.
func (c *h2Conn) release() {
	c.mu.Lock()
	if p := c.pending; p != nil && c.insertable() {
		c.pending = nil
		c.mu.Unlock()
		c.write(p)
		c.mu.Lock()
	}
	c.writing = false
	c.done.Broadcast()
	c.mu.Unlock()
}

// insertable reports whether a frame of ours can go now: between two of
// the server's frames, after its first, outside a header block.
func (c *h2Conn) insertable() bool {
	return c.hdrN == 0 && c.left == 0 && c.framed && !c.inHeaders
}

// write writes one of our frames.
func (c *h2Conn) write(f []byte) error {
	_, err := c.Conn.Write(f)
	if err == nil && c.firstAt.Load() == 0 {
		c.firstAt.Store(time.Now().UnixNano())
	}
	return err
}

// Write writes what the server wrote, and the first GOAWAY at the first
// boundary once it is pending.
func (c *h2Conn) Write(p []byte) (int, error) {
	pending := c.acquire()
	defer c.release()
	if pending == nil {
		c.follow(p)
		return c.Conn.Write(p)
	}
	n := 0
	for n < len(p) && !c.insertable() {
		n += c.advance(p[n:])
	}
	if n > 0 {
		if w, err := c.Conn.Write(p[:n]); err != nil {
			return w, err
		}
	}
	if c.insertable() {
		c.mu.Lock()
		c.pending = nil
		c.mu.Unlock()
		if err := c.write(pending); err != nil {
			return n, err
		}
	}
	c.follow(p[n:])
	w, err := c.Conn.Write(p[n:])
	return n + w, err
}

// follow advances over all of p.
func (c *h2Conn) follow(p []byte) {
	for len(p) > 0 {
		p = p[c.advance(p):]
	}
}

// advance advances over p up to the end of the frame being written, and
// returns how many bytes that took.
func (c *h2Conn) advance(p []byte) int {
	n := 0
	for n < len(p) {
		if c.left > 0 {
			k := min(c.left, len(p)-n)
			c.left -= k
			n += k
			if c.left == 0 {
				return n
			}
			continue
		}
		k := copy(c.hdr[c.hdrN:], p[n:])
		c.hdrN += k
		n += k
		if c.hdrN < len(c.hdr) {
			continue
		}
		c.header()
		if c.left == 0 {
			return n
		}
	}
	return n
}

// header takes in the frame header just written.
func (c *h2Conn) header() {
	const (
		typeHeaders, typePushPromise, typeGoAway, typeContinuation = 1, 5, 7, 9
		endHeaders                                                 = 0x4
	)
	c.hdrN = 0
	c.framed = true
	c.left = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
	switch typ, flags := c.hdr[3], c.hdr[4]; typ {
	case typeHeaders, typePushPromise, typeContinuation:
		c.inHeaders = flags&endHeaders == 0
	case typeGoAway:
		if binary.BigEndian.Uint32(c.hdr[5:9])&0x7fffffff == 0 {
			c.goAwayAt.Store(time.Now().UnixNano())
		}
	}
}

// goAway has the first GOAWAY written: now, if no write is in progress and
// the stream is at a boundary; else by the write in progress or the next.
// It may block on the connection's socket (a client that does not read):
// call it in a goroutine of its own.
func (c *h2Conn) goAway() {
	c.mu.Lock()
	if c.first || c.goAwayAt.Load() != 0 {
		c.mu.Unlock()
		return
	}
	c.first = true
	if c.writing || !c.insertable() {
		c.pending = []byte(firstGoAway)
		c.mu.Unlock()
		return
	}
	c.writing = true
	c.mu.Unlock()
	c.write([]byte(firstGoAway))
	c.release()
}

// setIdle records whether a stream is open (Go's HTTP/2 server reports
// StateActive and StateIdle).
func (c *h2Conn) setIdle(idle bool) {
	if !idle {
		c.idleSince.Store(0)
		return
	}
	c.idleSince.CompareAndSwap(0, time.Now().UnixNano())
}

// quiet reports whether the connection has had the server's GOAWAY and has
// had no stream open, both for h2Linger: the server would close it a
// second later.
func (c *h2Conn) quiet(now time.Time) bool {
	g, i := c.goAwayAt.Load(), c.idleSince.Load()
	linger := now.Add(-h2Linger).UnixNano()
	return g != 0 && i != 0 && g <= linger && i <= linger
}

// firstSince reports whether the first GOAWAY was written at least d ago.
func (c *h2Conn) firstSince(now time.Time, d time.Duration) bool {
	f := c.firstAt.Load()
	return f != 0 && f <= now.Add(-d).UnixNano()
}
