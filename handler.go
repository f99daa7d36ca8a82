package clusterflock

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterflock/clusterflock/internal/guard"
	"github.com/clusterflock/clusterflock/internal/plug"
)

// httpServe returns the ServeFunc of Run: an http.Server for h, built from
// the Options.Server template, that drains without loss when ctx is done.
func httpServe(h http.Handler, o options, rec *requests, m plug.Worker) ServeFunc {
	if m != nil {
		h = m.Handler(h) // the request metrics
	}
	return func(ctx context.Context, ln net.Listener) error {
		ln = &onceCloseListener{Listener: ln} // drain closes it before Shutdown does
		conns := &connTracker{}
		srv := newServer(o.Server, conns.wrap(rec.wrap(h)), conns, o.Logger)
		useTLS := srv.TLSConfig != nil // configuring HTTP/2 may set an empty one
		if d, ok := ctx.Value(lameDuckKey{}).(*lameDuck); ok {
			d.serving(conns)
		}
		base := context.WithoutCancel(ctx) // in-flight requests outlive the stop signal
		srv.BaseContext = func(l net.Listener) context.Context {
			if o.Server != nil && o.Server.BaseContext != nil {
				return o.Server.BaseContext(l)
			}
			return base
		}
		installH2(srv, useTLS, conns)
		errc := make(chan error, 1)
		go func() {
			if useTLS {
				errc <- srv.ServeTLS(ln, "", "")
			} else {
				errc <- srv.Serve(ln)
			}
		}()
		select {
		case err := <-errc:
			if ctx.Err() == nil {
				return err
			}
			return drain(srv, ln, conns, o.timing(), nil)
		case <-ctx.Done():
			return drain(srv, ln, conns, o.timing(), errc)
		}
	}
}

// newServer builds the worker's http.Server from tmpl (may be nil): its
// timeouts, TLS, HTTP/2 and logging settings, with safe defaults where the
// template leaves them unset.
func newServer(tmpl *http.Server, h http.Handler, conns *connTracker, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ConnState:         conns.track,
		ConnContext:       conns.connContext(nil),
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if tmpl == nil {
		return srv
	}
	srv.TLSConfig = tmpl.TLSConfig
	srv.ReadTimeout = tmpl.ReadTimeout
	if tmpl.ReadHeaderTimeout != 0 {
		srv.ReadHeaderTimeout = tmpl.ReadHeaderTimeout
	}
	srv.WriteTimeout = tmpl.WriteTimeout
	if tmpl.IdleTimeout != 0 {
		srv.IdleTimeout = tmpl.IdleTimeout
	}
	srv.MaxHeaderBytes = tmpl.MaxHeaderBytes
	srv.TLSNextProto = tmpl.TLSNextProto
	srv.ConnContext = conns.connContext(tmpl.ConnContext)
	if tmpl.ErrorLog != nil {
		srv.ErrorLog = tmpl.ErrorLog
	}
	srv.DisableGeneralOptionsHandler = tmpl.DisableGeneralOptionsHandler
	srv.HTTP2 = tmpl.HTTP2
	srv.Protocols = tmpl.Protocols
	if user := tmpl.ConnState; user != nil {
		srv.ConnState = func(c net.Conn, s http.ConnState) {
			conns.track(c, s)
			user(c, s)
		}
	}
	return srv
}

// checkServerTemplate rejects template fields that the pool sets itself.
func checkServerTemplate(tmpl *http.Server) error {
	if tmpl == nil {
		return nil
	}
	if tmpl.Addr != "" {
		return fmt.Errorf("clusterflock: Options.Server.Addr is %q; set Options.Addr instead", tmpl.Addr)
	}
	if tmpl.Handler != nil {
		return fmt.Errorf("clusterflock: Options.Server.Handler is set; pass the handler to Run instead")
	}
	return nil
}

// requests counts a worker's requests: for its heartbeat (served, in
// flight) and for Options.MaxRequests.
type requests struct {
	limit    int64 // MaxRequests plus jitter; 0: never recycle
	served   atomic.Int64
	inFlight atomic.Int64
	// With StuckTimeout: requests are labelled for goroutine dumps, and
	// progress counts completions, response writes and flushes, body
	// reads that return bytes, and hijacks.
	labelled bool
	progress atomic.Int64
}

func newRequests(o options) *requests {
	r := &requests{labelled: o.StuckTimeout > 0}
	if o.MaxRequests > 0 {
		r.limit = int64(o.MaxRequests + rand.IntN(o.MaxRequestsJitter+1))
	}
	return r
}

// wrap counts h's requests: two atomic additions each (and, with
// StuckTimeout, labels and progress).
func (r *requests) wrap(h http.Handler) http.Handler {
	if r.labelled {
		return r.watch(h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.inFlight.Add(1)
		defer func() {
			r.inFlight.Add(-1)
			r.served.Add(1)
		}()
		h.ServeHTTP(w, req)
	})
}

// watch is wrap with StuckTimeout: each request's goroutine carries pprof
// labels (method, path, start) while its handler runs, so that a goroutine
// dump names it, and its writes and body reads count as progress.
func (r *requests) watch(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		base := req.Context()
		pprof.SetGoroutineLabels(pprof.WithLabels(base, pprof.Labels(
			guard.LabelMethod, req.Method, guard.LabelPath, req.URL.Path, guard.LabelStart, time.Now().Format(time.RFC3339Nano))))
		pw := &progressWriter{ResponseWriter: w, r: r}
		r.watchBody(req)
		r.inFlight.Add(1)
		defer func() {
			if !pw.hijacked {
				r.inFlight.Add(-1)
			}
			r.served.Add(1)
			r.progress.Add(1)
			pprof.SetGoroutineLabels(base)
		}()
		h.ServeHTTP(pw, req)
	})
}

// stuck returns the requests in flight that a handler still serves (not
// hijacked) and the progress count, for guard.Stuck.
func (r *requests) stuck() (inFlight, progress int64) {
	return r.inFlight.Load(), r.progress.Load()
}

// progressWriter counts a handler's writes and flushes as progress; a
// hijacked connection (a websocket) leaves the requests in flight.
type progressWriter struct {
	http.ResponseWriter
	r        *requests
	hijacked bool
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.r.progress.Add(1)
	return p.ResponseWriter.Write(b)
}

func (p *progressWriter) Flush() {
	p.r.progress.Add(1)
	_ = http.NewResponseController(p.ResponseWriter).Flush()
}

func (p *progressWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(p.ResponseWriter).Hijack()
	if err == nil && !p.hijacked {
		p.hijacked = true
		p.r.inFlight.Add(-1)
		p.r.progress.Add(1)
	}
	return c, rw, err
}

// Unwrap lets http.ResponseController reach the server's writer.
func (p *progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// load returns the requests served and in flight.
func (r *requests) load() (served, inFlight int64) { return r.served.Load(), r.inFlight.Load() }

// recycle reports whether the worker has served its MaxRequests, and says so.
func (r *requests) recycle() (string, bool) {
	n := r.served.Load() + r.inFlight.Load()
	if r.limit == 0 || n < r.limit {
		return "", false
	}
	return fmt.Sprintf("served %d requests (MaxRequests)", n), true
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
