package clusterflock

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// recordConn is a net.Conn that records what is written to it.
type recordConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

// frame returns an HTTP/2 frame of type typ on stream with n payload bytes.
func frame(typ byte, stream uint32, n int) []byte {
	f := make([]byte, 9+n)
	f[0], f[1], f[2], f[3] = byte(n>>16), byte(n>>8), byte(n), typ
	binary.BigEndian.PutUint32(f[5:], stream)
	for i := range n {
		f[9+i] = byte(i)
	}
	return f
}

// splitFrames parses b into frames, or fails the test.
func splitFrames(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 9 {
			t.Fatalf("a partial frame header at the end: % x", b)
		}
		n := 9 + (int(b[0])<<16 | int(b[1])<<8 | int(b[2]))
		if len(b) < n {
			t.Fatalf("a partial frame at the end: %d of %d bytes", len(b), n)
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// randomFrames returns n frames of a server's: DATA, SETTINGS, PING,
// WINDOW_UPDATE and RST_STREAM frames of random sizes, and header blocks,
// some in one HEADERS frame (END_HEADERS), some continued in CONTINUATION
// frames.
func randomFrames(rng *rand.Rand, n int) [][]byte {
	var frames [][]byte
	for i := range n {
		stream := uint32(2*i + 1)
		switch typ := []byte{0, 1, 3, 4, 6, 8}[rng.IntN(6)]; typ {
		case 1:
			parts := 1 + rng.IntN(3)
			for k := range parts {
				t := byte(1)
				if k > 0 {
					t = 9
				}
				f := frame(t, stream, rng.IntN(300))
				if k == parts-1 {
					f[4] |= 0x4 // END_HEADERS
				}
				frames = append(frames, f)
			}
		default:
			frames = append(frames, frame(typ, stream, rng.IntN(300)))
		}
	}
	return frames
}

// TestH2FirstGoAwayBetweenFrames: whatever pieces the server writes its
// frames in, the first GOAWAY goes out once, between two frames, and every
// frame of the server's goes out whole and in order.
func TestH2FirstGoAwayBetweenFrames(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		frames := randomFrames(rng, 40)
		var stream []byte
		for _, f := range frames {
			stream = append(stream, f...)
		}
		rec := &recordConn{}
		c := newH2Conn(rec)
		at := rng.IntN(len(stream))
		for len(stream) > 0 {
			n := min(len(stream), 1+rng.IntN(700))
			if at >= 0 && at < n {
				c.goAway()
				at = -1
			} else {
				at -= n
			}
			if w, err := c.Write(stream[:n]); err != nil || w != n {
				t.Fatalf("seed %d: Write = %d, %v; want %d, nil", seed, w, err, n)
			}
			stream = stream[n:]
		}
		got := splitFrames(t, rec.buf.Bytes())
		if bytes.Equal(got[0], []byte(firstGoAway)) {
			t.Fatalf("seed %d: the first GOAWAY before the server's first frame (its SETTINGS)", seed)
		}
		var without [][]byte
		goAways := 0
		for i, f := range got {
			if bytes.Equal(f, []byte(firstGoAway)) {
				goAways++
				if i > 0 && got[i-1][3] != 0 && got[i-1][4]&0x4 == 0 && (got[i-1][3] == 1 || got[i-1][3] == 9) {
					t.Fatalf("seed %d: the first GOAWAY inside a header block", seed)
				}
				continue
			}
			without = append(without, f)
		}
		if goAways != 1 {
			t.Fatalf("seed %d: %d first GOAWAYs written; want 1", seed, goAways)
		}
		if len(without) != len(frames) {
			t.Fatalf("seed %d: %d frames of the server's; want %d", seed, len(without), len(frames))
		}
		for i := range frames {
			if !bytes.Equal(without[i], frames[i]) {
				t.Fatalf("seed %d: frame %d changed", seed, i)
			}
		}
	}
}

// TestH2ServersGoAwaySeen: the server's own GOAWAY is noticed (it starts
// the linger), a GOAWAY-like payload inside another frame is not.
func TestH2ServersGoAwaySeen(t *testing.T) {
	c := newH2Conn(&recordConn{})
	c.Write(frame(0, 1, 17)) // DATA whose payload is not a frame header
	if c.goAwayAt.Load() != 0 {
		t.Fatal("a DATA frame taken for a GOAWAY")
	}
	g := frame(7, 0, 8)
	c.Write(g[:4])
	c.Write(g[4:])
	if c.goAwayAt.Load() == 0 {
		t.Fatal("the server's GOAWAY, written in two pieces, not seen")
	}
}

// TestH2TLSDrain: over TLS with ALPN h2, the wrapped connection still
// gives requests their TLS state, and requests in flight when the drain
// starts are answered.
func TestH2TLSDrain(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil) // only for its certificate and client
	ts.EnableHTTP2 = true
	ts.StartTLS()
	cert := ts.TLS.Certificates
	client := ts.Client()
	ts.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 64)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.ProtoMajor != 2 {
			http.Error(w, "not HTTP/2 over TLS", http.StatusTeapot)
			return
		}
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "ok")
	})
	o := options{Options: Options{ShutdownTimeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Server: &http.Server{TLSConfig: &tls.Config{Certificates: cert}}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpServe(h, o, newRequests(o), nil)(ctx, ln) }()
	defer func() { cancel(); <-done }()
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			res, err := client.Get("https://" + ln.Addr().String() + "/")
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || string(b) != "ok" {
					err = &net.AddrError{Err: res.Status + " " + string(b), Addr: "reply"}
				}
			}
			errs <- err
		}()
	}
	for range n {
		select {
		case <-started:
		case err := <-errs:
			t.Fatalf("a request failed before the drain: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the requests did not reach the handler in 10 s")
		}
	}
	cancel()
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("a request in flight at the drain: %v", err)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("drain: %v", err)
	}
	done <- nil
}

// discardConn is a net.Conn whose writes go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkH2ConnWrite is the wrapper's cost on the server's writes: a
// response's HEADERS and DATA frames written in one piece, as Go's HTTP/2
// server flushes them, against the same write without the wrapper.
func BenchmarkH2ConnWrite(b *testing.B) {
	var resp []byte
	resp = append(resp, frame(1, 1, 30)...)
	resp = append(resp, frame(0, 1, 100)...)
	resp = append(resp, frame(0, 1, 0)...)
	b.Run("bare", func(b *testing.B) {
		var c net.Conn = discardConn{}
		b.SetBytes(int64(len(resp)))
		for b.Loop() {
			c.Write(resp)
		}
	})
	b.Run("wrapped", func(b *testing.B) {
		var c net.Conn = newH2Conn(discardConn{})
		b.SetBytes(int64(len(resp)))
		for b.Loop() {
			c.Write(resp)
		}
	})
}

// blockedConn is a net.Conn whose writes block until unblock is closed: a
// client that stopped reading, its socket buffer full.
type blockedConn struct {
	net.Conn
	unblock chan struct{}
}

func (b blockedConn) Write(p []byte) (int, error) {
	<-b.unblock
	return len(p), nil
}

// TestH2BlockedWriteBlocksNothingElse: while the server's write to a
// client that does not read is blocked, what the drain and the server's
// ConnState reports do with that connection returns at once (a lock held
// across the write once stopped the worker accepting).
func TestH2BlockedWriteBlocksNothingElse(t *testing.T) {
	under := blockedConn{unblock: make(chan struct{})}
	tr := &connTracker{}
	h, _ := h2Of(tr.addH2(under, under))
	wrote := make(chan struct{})
	go func() {
		h.Write(frame(0, 1, 100))
		close(wrote)
	}()
	for h.acquireFree() {
		time.Sleep(time.Millisecond) // until the write is under way
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.track(h, http.StateIdle)                            // Go's HTTP/2 server: no stream open
		tr.track(&net.TCPConn{}, http.StateNew)                // the next connection accepted
		tr.goAwayH2()                                          // the drain's first GOAWAY
		tr.closeQuiet()                                        // the drain's wait
		tr.waitFirstGoAways(canceledContext())                 // the gap's wait
		_ = h.quiet(time.Now()) || h.firstSince(time.Now(), 0) // the drain's checks
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the drain's and ConnState's calls blocked behind a blocked write")
	}
	close(under.unblock)
	<-wrote
}

func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// acquireFree reports whether no write is in progress.
func (c *h2Conn) acquireFree() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.writing
}

// TestCloseNowTLS: closing a TLS connection whose client does not read
// returns at once (tls.Conn.Close would wait up to 5 s to send its
// close_notify), so hijacked connections are closed at the deadline.
func TestCloseNowTLS(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cert := ts.TLS.Certificates
	ts.Close()
	a, b := net.Pipe() // writes block until read: a client that does not read
	defer b.Close()
	srv := tls.Server(a, &tls.Config{Certificates: cert})
	cli := tls.Client(b, &tls.Config{InsecureSkipVerify: true})
	errc := make(chan error, 1)
	go func() { errc <- cli.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	tr := &connTracker{}
	tr.track(srv, http.StateNew)
	tr.track(srv, http.StateHijacked)
	start := time.Now()
	tr.closeHijacked()
	if took := time.Since(start); took > time.Second {
		t.Errorf("closing a hijacked TLS connection whose client does not read took %v", took)
	}
	b.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := b.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the client's read after the close: %v; want EOF", err)
	}
}
