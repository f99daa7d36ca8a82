//go:build linux

package integration_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Load parameters. Every request opens a new connection: Go's http.Client
// retries a failed request on a reused keep-alive connection, which would
// hide losses; nothing retries a fresh connection.
const (
	loadClients  = 8                      // closed-loop clients, one connection each at a time
	loadBound    = 6 * time.Second        // a load stops by itself after this long
	loadDeadline = 5 * time.Second        // per request: dial, write and read
	loadTail     = 300 * time.Millisecond // load after the last event
	loadMin      = 2000                   // requests a load makes at least, unless it hits loadBound
)

// load is a bounded closed-loop load: loadClients goroutines each make a
// request and start over, until stopped or the bound passes. The load of
// startLoad sends "GET /" with Connection: close on a fresh TCP connection
// and reads the whole answer.
type load struct {
	t     *testing.T
	do    requestFunc
	bound time.Duration
	start time.Time
	quit  chan struct{} // closed to stop the clients
	done  chan struct{} // closed when every client has returned
	once  sync.Once

	mu       sync.Mutex
	served   []int             // pid that answered each successful request, in order
	failures map[string]int    // failed requests by kind
	examples map[string]string // kind: the first failure of that kind, in full
	total    int
	boundHit bool             // the clients stopped at loadBound, not when asked
	kernel   map[string]int64 // listenCounters at the start
}

// requestFunc makes one request and returns the pid that answered, or the
// kind of failure and its full description.
type requestFunc func() (pid int, failure, detail string)

// startLoad starts the clients against addr, each request on a new
// connection, for at most loadBound; they are stopped and waited for when
// the test ends, if not before.
func startLoad(t *testing.T, addr string) *load {
	d := &net.Dialer{Timeout: loadDeadline}
	return startLoadFunc(t, loadBound, func() (int, string, string) {
		pid, failure := request(d, addr)
		return pid, failure, failure
	})
}

// startLoadFunc starts loadClients clients making requests with do, for at
// most bound.
func startLoadFunc(t *testing.T, bound time.Duration, do requestFunc) *load {
	l := &load{t: t, do: do, bound: bound, start: time.Now(), quit: make(chan struct{}), done: make(chan struct{}),
		failures: map[string]int{}, examples: map[string]string{}, kernel: listenCounters()}
	timer := time.AfterFunc(bound, func() {
		l.mu.Lock()
		l.boundHit = true
		l.mu.Unlock()
		l.stop()
	})
	var wg sync.WaitGroup
	for range loadClients {
		wg.Go(l.client)
	}
	go func() {
		wg.Wait()
		timer.Stop()
		close(l.done)
	}()
	t.Cleanup(func() {
		l.stop()
		<-l.done
	})
	return l
}

func (l *load) stop() { l.once.Do(func() { close(l.quit) }) }

func (l *load) client() {
	for {
		select {
		case <-l.quit:
			return
		default:
		}
		pid, kind, detail := l.do()
		l.mu.Lock()
		l.total++
		if kind == "" {
			l.served = append(l.served, pid)
		} else {
			l.failures[kind]++
			if _, ok := l.examples[kind]; !ok {
				l.examples[kind] = detail
			}
		}
		l.mu.Unlock()
	}
}

const loadRequest = "GET / HTTP/1.1\r\nHost: clusterflock\r\nConnection: close\r\n\r\n"

// request makes one request on a new connection and returns the pid that
// answered, or the kind of failure.
func request(d *net.Dialer, addr string) (pid int, failure string) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, "dial: " + errKind(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(loadDeadline))
	if _, err := io.WriteString(c, loadRequest); err != nil {
		return 0, "write: " + errKind(err)
	}
	br := bufio.NewReader(c)
	if _, err := br.Peek(1); err != nil {
		return 0, "read, no byte of an answer: " + errKind(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, "read header: " + errKind(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, "read body: " + errKind(err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, "status " + resp.Status
	}
	pid, err = strconv.Atoi(string(body))
	if err != nil {
		return 0, fmt.Sprintf("bad body %q", body)
	}
	return pid, ""
}

// errKind names err without addresses: an errno name, EOF or timeout.
func errKind(err error) string {
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.As(err, &errno):
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return errno.Error()
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}

// successes returns the number of successful requests so far.
func (l *load) successes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.served)
}

// waitServed waits until n more requests than at mark have succeeded.
// It polls: the clients report thousands of times a second.
func (l *load) waitServed(mark, n int, timeout time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := l.successes() - mark
		if got >= n {
			return
		}
		select {
		case <-l.done:
			l.t.Fatalf("the load stopped after %v with %d of %d successful requests", time.Since(l.start).Round(time.Millisecond), got, n)
		default:
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%d of %d successful requests after %v (%s)", got, n, timeout, l.summary())
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// pidsSince returns how many successful requests each pid answered since
// the mark (a value of successes).
// waitServedBy waits (bounded) until pid has answered a request of the
// load made after mark.
func (l *load) waitServedBy(mark, pid int, timeout time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for l.pidsSince(mark)[pid] == 0 {
		if time.Now().After(deadline) {
			l.t.Fatalf("worker %d served nothing in %v", pid, timeout)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func (l *load) pidsSince(mark int) map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int]int{}
	for _, pid := range l.served[mark:] {
		out[pid]++
	}
	return out
}

// result is what a load saw.
type result struct {
	total, failed int
	failures      map[string]int
	took          time.Duration
	// kernel is what listenCounters counted meanwhile, those that changed
	// (the network namespace's: other tests' connections count too).
	kernel string
}

func (r result) String() string {
	s := fmt.Sprintf("failed/total = %d/%d in %v", r.failed, r.total, r.took.Round(time.Millisecond))
	if r.failed > 0 {
		var kinds []string
		for _, k := range slices.Sorted(maps.Keys(r.failures)) {
			kinds = append(kinds, fmt.Sprintf("%s ×%d", k, r.failures[k]))
		}
		s += " (" + strings.Join(kinds, ", ") + ")"
	}
	if r.kernel != "" {
		s += "; the kernel meanwhile: " + r.kernel
	}
	return s
}

// listenCounters returns the kernel's counters of connections lost or
// moved at a listener (TcpExt in /proc/net/netstat): a migration that
// failed (TCPMigrateReqFailure: the child is reset), drops at a full or
// closing listener; and net.ipv4.tcp_migrate_req, which another test
// run in the same network namespace may change. Nil where they cannot
// be read.
func listenCounters() map[string]int64 {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return nil
	}
	var keys []string
	out := map[string]int64{}
	if v, err := os.ReadFile(migrateReqPath); err == nil {
		out["tcp_migrate_req"], _ = strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if keys == nil {
			keys = f
			continue
		}
		for i := 1; i < len(f) && i < len(keys); i++ {
			switch keys[i] {
			case "TCPMigrateReqSuccess", "TCPMigrateReqFailure", "ListenDrops", "ListenOverflows", "TCPReqQFullDrop":
				out[keys[i]], _ = strconv.ParseInt(f[i], 10, 64)
			}
		}
	}
	return out
}

// grown names the counters that changed since before, with how much.
func grown(before, after map[string]int64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if d := after[k] - before[k]; d != 0 {
			out = append(out, fmt.Sprintf("%s %+d", k, d))
		}
	}
	return strings.Join(out, ", ")
}

func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := result{total: l.total, failures: maps.Clone(l.failures), took: time.Since(l.start)}
	for _, n := range l.failures {
		r.failed += n
	}
	return r.String()
}

// finish lets the load run for a further loadTail and until loadMin
// requests in all (within its bound), stops it, logs its counts under label
// and returns them. It fails the test if the load had stopped at its bound
// before finish was called: what happened after that was not under load.
func (l *load) finish(label string) result {
	l.t.Helper()
	l.mu.Lock()
	early := l.boundHit
	l.mu.Unlock()
	tail := time.NewTimer(loadTail)
	select {
	case <-tail.C:
	case <-l.done:
		tail.Stop()
	}
	for l.requests() < loadMin {
		select {
		case <-l.done:
		case <-time.After(5 * time.Millisecond): // polling interval, bounded by the load's bound
			continue
		}
		break
	}
	l.stop()
	<-l.done
	l.mu.Lock()
	r := result{total: l.total, failures: maps.Clone(l.failures), took: time.Since(l.start), kernel: grown(l.kernel, listenCounters())}
	examples := maps.Clone(l.examples)
	l.mu.Unlock()
	for _, n := range r.failures {
		r.failed += n
	}
	l.t.Logf("%s: %v", label, r)
	for _, k := range slices.Sorted(maps.Keys(examples)) {
		if examples[k] != k {
			l.t.Logf("%s: the first %q: %s", label, k, examples[k])
		}
	}
	if early {
		l.t.Errorf("%s: the load stopped at its bound of %v before the events were over: they were not all under load", label, l.bound)
	}
	return r
}

func (l *load) requests() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
