package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A raw HTTP/1.1 client: no pooling, no retries, so every failure is seen
// and classified (net/http's Transport silently retries some of them).

const (
	reqClose     = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
	reqKeepAlive = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
)

type answer struct {
	pid    int
	status int
	body   string
	close  bool
}

// countingReader tells whether any response byte arrived.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// roundTrip writes req on conn and reads one response. got reports whether
// any response byte arrived.
func roundTrip(conn net.Conn, br *bufio.Reader, cr *countingReader, req string, timeout time.Duration) (a answer, got bool, stage string, err error) {
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, req); err != nil {
		return a, false, "write", err
	}
	before := cr.n
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return a, cr.n > before, "read", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return a, true, "read", err
	}
	a.status = resp.StatusCode
	a.body = string(body)
	a.close = resp.Close
	a.pid, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
	return a, true, "", nil
}

// probe makes one request on a fresh connection.
func probe(addr, path string, timeout time.Duration) (answer, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return answer{}, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	cr := &countingReader{r: conn}
	req := strings.Replace(reqClose, "GET / ", "GET "+path+" ", 1)
	a, _, stage, err := roundTrip(conn, bufio.NewReader(cr), cr, req, timeout)
	if err != nil {
		return a, fmt.Errorf("%s: %w", stage, err)
	}
	return a, nil
}

// waitReady polls addr with fresh connections until n distinct PIDs have
// answered 200, and returns them.
func waitReady(addr string, n int, timeout time.Duration) ([]int, error) {
	deadline := time.Now().Add(timeout)
	seen := map[int]bool{}
	var lastErr error
	for time.Now().Before(deadline) {
		a, err := probe(addr, "/", 250*time.Millisecond)
		switch {
		case err != nil:
			lastErr = err
			time.Sleep(5 * time.Millisecond)
		case a.status != 200:
			lastErr = fmt.Errorf("status %d", a.status)
			time.Sleep(5 * time.Millisecond)
		default:
			seen[a.pid] = true
			if len(seen) >= n {
				return sortedKeys(seen), nil
			}
		}
	}
	return sortedKeys(seen), fmt.Errorf("%d of %d processes answered within %v (last error: %v)", len(seen), n, timeout, lastErr)
}

// seeAll probes with fresh connections until every pid in want has answered.
func seeAll(addr string, want []int, timeout time.Duration) error {
	missing := map[int]bool{}
	for _, p := range want {
		missing[p] = true
	}
	deadline := time.Now().Add(timeout)
	for len(missing) > 0 && time.Now().Before(deadline) {
		a, err := probe(addr, "/", 250*time.Millisecond)
		if err != nil {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		delete(missing, a.pid)
	}
	if len(missing) > 0 {
		return fmt.Errorf("pids %v did not answer within %v", sortedKeys(missing), timeout)
	}
	return nil
}

// answering probes fresh connections until n of pids have answered (or
// timeout passes) and returns those, sorted.
func answering(addr string, pids []int, n int, timeout time.Duration) []int {
	seen := map[int]bool{}
	deadline := time.Now().Add(timeout)
	for len(seen) < n && time.Now().Before(deadline) {
		a, err := probe(addr, "/", 250*time.Millisecond)
		if err != nil {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		if slices.Contains(pids, a.pid) {
			seen[a.pid] = true
		}
	}
	return sortedKeys(seen)
}

// loadResult is what a closed-loop raw load saw.
type loadResult struct {
	mu        sync.Mutex
	ok        int64
	failed    int64
	retryable int64             // keep-alive connection closed by the server before any response byte
	kinds     map[string]int64  // failed requests by kind
	samples   map[string]string // one error message per kind
	failAt    []time.Duration   // when failures happened (first 10000)
	firstPid  map[int]time.Duration
}

func (r *loadResult) sampleString() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, k := range sortedKeys(r.samples) {
		parts = append(parts, k+": "+r.samples[k])
	}
	return strings.Join(parts, "; ")
}

func (r *loadResult) kindString() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, k := range sortedKeys(r.kinds) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, r.kinds[k]))
	}
	return strings.Join(parts, " ")
}

// firstSeenAfter is when the first pid not in known answered, relative to
// the load's start, or -1.
func (r *loadResult) firstSeenAfter(known map[int]bool) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	best := time.Duration(-1)
	for p, t := range r.firstPid {
		if !known[p] && (best < 0 || t < best) {
			best = t
		}
	}
	return best
}

func (r *loadResult) pidsSeen() map[int]time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[int]time.Duration, len(r.firstPid))
	for k, v := range r.firstPid {
		out[k] = v
	}
	return out
}

func classify(stage string, err error, got bool) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return stage + ":reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return stage + ":refused"
	case errors.Is(err, syscall.EPIPE):
		return stage + ":epipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return stage + ":timeout"
	case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && !got:
		// http.ReadResponse reports EOF before the status line as
		// io.ErrUnexpectedEOF.
		return stage + ":eof-no-bytes"
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return stage + ":eof-partial"
	}
	return stage + ":other"
}

// runLoad drives addr with conns closed-loop clients until ctx ends. With
// keepAlive false every request uses a new connection (Connection: close).
func runLoad(ctx context.Context, addr string, conns int, keepAlive bool, start time.Time) *loadResult {
	res := newLoadResult()
	runLoadInto(ctx, res, addr, conns, keepAlive, start)
	return res
}

func newLoadResult() *loadResult {
	return &loadResult{kinds: map[string]int64{}, samples: map[string]string{}, firstPid: map[int]time.Duration{}}
}

// runLoadInto is runLoad with a result the caller can read while it runs.
func runLoadInto(ctx context.Context, res *loadResult, addr string, conns int, keepAlive bool, start time.Time) {
	req := reqClose
	if keepAlive {
		req = reqKeepAlive
	}
	fail := func(kind string, err error) {
		res.mu.Lock()
		res.failed++
		res.kinds[kind]++
		if _, ok := res.samples[kind]; !ok && err != nil {
			res.samples[kind] = err.Error()
		}
		if len(res.failAt) < 10000 {
			res.failAt = append(res.failAt, time.Since(start))
		}
		res.mu.Unlock()
	}
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn net.Conn
			var br *bufio.Reader
			var cr *countingReader
			reused := false
			drop := func() {
				if conn != nil {
					conn.Close()
					conn = nil
				}
			}
			defer drop()
			for ctx.Err() == nil {
				if conn == nil {
					c, err := net.DialTimeout("tcp", addr, 2*time.Second)
					if err != nil {
						fail(classify("dial", err, false), err)
						time.Sleep(time.Millisecond) // do not spin on refused
						continue
					}
					conn, reused = c, false
					cr = &countingReader{r: conn}
					br = bufio.NewReader(cr)
				}
				a, got, stage, err := roundTrip(conn, br, cr, req, 3*time.Second)
				if err != nil {
					if reused && !got && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
						errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
						// The server closed an idle keep-alive connection
						// before reading this request: a client may retry
						// it (RFC 9112 §9.3.1), and net/http's Transport does.
						res.mu.Lock()
						res.retryable++
						res.mu.Unlock()
					} else {
						fail(classify(stage, err, got), err)
					}
					drop()
					continue
				}
				if a.status < 200 || a.status > 299 {
					fail(fmt.Sprintf("status:%d", a.status), nil)
				} else {
					res.mu.Lock()
					res.ok++
					if _, ok := res.firstPid[a.pid]; !ok {
						res.firstPid[a.pid] = time.Since(start)
					}
					res.mu.Unlock()
				}
				if !keepAlive || a.close {
					drop()
				} else {
					reused = true
				}
			}
		}()
	}
	wg.Wait()
}
