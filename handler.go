package clusterflock

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/reuseport"
)

// heartbeatInterval is how often a worker tells the supervisor it is alive.
const heartbeatInterval = time.Second

// newConnDrainLimit bounds the wait for accepted connections whose first
// request has not been read yet, before Shutdown (which would drop them).
const newConnDrainLimit = time.Second

// runWorker is the worker role: serve h on a reuseport listener until asked
// to stop, then drain and return.
func runWorker(ctx context.Context, h http.Handler, o options, env proto.WorkerEnv) error {
	// The inherited fds must not leak into the handler's subprocesses, and
	// the marker must not make them think they are workers.
	syscall.CloseOnExec(proto.StatusFD)
	syscall.CloseOnExec(proto.LifelineFD)
	os.Unsetenv(proto.EnvWorker)
	status := &statusWriter{f: os.NewFile(proto.StatusFD, "clusterflock-status")}
	defer status.f.Close()
	lifeline := os.NewFile(proto.LifelineFD, "clusterflock-lifeline")
	defer lifeline.Close()

	log := o.Logger.With("pid", os.Getpid(), "slot", env.Slot, "generation", env.Generation)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, handledSignals()...)
	defer signal.Stop(sigs)

	ln, err := reuseport.Listen(ctx, "tcp", env.Addr)
	if err != nil {
		status.send(proto.Message{Kind: proto.Failed, Text: err.Error()})
		return fmt.Errorf("clusterflock: worker: %w", err)
	}
	if err := reuseport.EnableMigration(ln, reuseport.Migration(env.Migration)); err != nil {
		log.Warn("cannot enable connection migration on this worker's listener", "migration", env.Migration, "err", err)
	}
	ln = &onceCloseListener{Listener: ln}
	conns := &connTracker{}
	recycle := newRecycler(o)
	srv := &http.Server{
		Handler:           recycle.wrap(h),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ConnState:         conns.track,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	status.send(proto.Message{Kind: proto.Ready})

	orphaned := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, lifeline) // returns at EOF: the supervisor is gone
		close(orphaned)
	}()
	beat := time.NewTicker(heartbeatInterval)
	defer beat.Stop()

	for {
		select {
		case <-beat.C:
			status.send(proto.Message{Kind: proto.Heartbeat})
			if n, over := recycle.over(); over {
				// Asked again each beat until the supervisor acts on it.
				status.send(proto.Message{Kind: proto.Retiring, Text: fmt.Sprintf("served %d requests (MaxRequests)", n)})
			}
			continue
		case sig := <-sigs:
			if sig != syscall.SIGTERM && sig != syscall.SIGQUIT {
				continue // the supervisor acts on it
			}
			log.Debug("worker stopping", "signal", sig.String())
		case <-orphaned:
			log.Warn("supervisor is gone; worker stopping")
		case <-ctx.Done():
		case err := <-served:
			status.send(proto.Message{Kind: proto.Failed, Text: err.Error()})
			return fmt.Errorf("clusterflock: worker: %w", err)
		}
		break
	}
	return drain(srv, ln, conns, o.ShutdownTimeout)
}

// drain stops srv without losing a request that reached it: it stops
// accepting, waits until every accepted connection has had its first
// request read (Shutdown would close those without an answer), then shuts
// down, which finishes in-flight requests and closes idle connections.
// The supervisor kills the worker at ShutdownTimeout; the worker's own
// deadline, a little later, matters only if the supervisor is gone.
func drain(srv *http.Server, ln net.Listener, conns *connTracker, timeout time.Duration) error {
	srv.SetKeepAlivesEnabled(false) // responses from now on say Connection: close
	ln.Close()
	conns.waitNoNew(newConnDrainLimit)
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
		return fmt.Errorf("clusterflock: worker shutdown: %w", err)
	}
	return nil
}

// statusWriter writes messages to the supervisor, one at a time.
type statusWriter struct {
	mu sync.Mutex
	f  *os.File
}

func (s *statusWriter) send(m proto.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = proto.Write(s.f, m) // a write error means the supervisor is gone: the lifeline says so
}

// connTracker counts connections that were accepted but have not yet had a
// request read (http.StateNew).
type connTracker struct {
	mu     sync.Mutex
	fresh  map[net.Conn]struct{}
	change chan struct{} // closed and replaced on every change
}

func (c *connTracker) track(conn net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fresh == nil {
		c.fresh = make(map[net.Conn]struct{})
	}
	if s == http.StateNew {
		c.fresh[conn] = struct{}{}
	} else {
		delete(c.fresh, conn)
	}
	if c.change != nil {
		close(c.change)
		c.change = nil
	}
}

// waitNoNew waits until no connection is in StateNew, or limit passes.
func (c *connTracker) waitNoNew(limit time.Duration) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if len(c.fresh) == 0 {
			c.mu.Unlock()
			return
		}
		if c.change == nil {
			c.change = make(chan struct{})
		}
		ch := c.change
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return
		}
	}
}

// onceCloseListener lets drain close the listener before Shutdown does.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// recycler counts requests for Options.MaxRequests.
type recycler struct {
	limit int64 // 0: never
	n     atomic.Int64
}

func newRecycler(o options) *recycler {
	r := &recycler{}
	if o.MaxRequests > 0 {
		r.limit = int64(o.MaxRequests + rand.IntN(o.MaxRequestsJitter+1))
	}
	return r
}

func (r *recycler) wrap(h http.Handler) http.Handler {
	if r.limit == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.n.Add(1)
		h.ServeHTTP(w, req)
	})
}

// over returns the count and whether it reached the limit.
func (r *recycler) over() (int64, bool) {
	n := r.n.Load()
	return n, r.limit > 0 && n >= r.limit
}
