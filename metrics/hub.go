package metrics

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/clusterflock/clusterflock/supervisor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// hub is the exporter in the supervisor: it gathers the workers, keeps
// the totals of those that left, counts the pool's events and serves
// /metrics.
type hub struct {
	log            *slog.Logger
	perSlot        map[string]bool
	gatherInterval time.Duration
	scrapeTimeout  time.Duration
	pool           *poolMetrics
	errs           *prometheus.CounterVec
	registry       *prometheus.Registry // the pool's own metrics

	mu       sync.Mutex
	kept     set // totals of workers gone, and of series reset
	carried  set // the pool's counters handed over by an old supervisor
	members  map[int]*member
	nextSeq  int
	srv      *http.Server     // nil until serving (a heir waits for the handover)
	ln       *net.TCPListener // srv's
	handover net.Conn         // a heir's channel from the old supervisor, while it waits
	closed   bool
	logged   map[string]bool // families whose conflict was logged
	// empty, if not nil, is closed when the last member leaves (settle).
	empty chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup
}

// member is one worker's channel and last snapshot.
type member struct {
	pid     int
	seq     int // attach order
	conn    net.Conn
	snap    set
	frames  int
	changed chan struct{} // closed at the next frame, or at the end
	warned  bool          // a refused frame was logged (later ones are only counted)
}

// Supervisor implements the pool's seam (Options.Metrics); programs do not
// call it.
func (e *Exporter) Supervisor(cfg plug.SupervisorConfig) (plug.Supervisor, error) {
	if e.Addr == "" {
		return nil, errors.New("clusterflock/metrics: Exporter.Addr is empty; say where to serve /metrics, for example \"127.0.0.1:9100\"")
	}
	if e.GatherInterval < 0 || e.ScrapeTimeout < 0 {
		return nil, fmt.Errorf("clusterflock/metrics: negative Exporter.GatherInterval (%v) or ScrapeTimeout (%v)", e.GatherInterval, e.ScrapeTimeout)
	}
	h := &hub{log: cfg.Logger, perSlot: e.perSlot(), kept: set{}, carried: set{},
		members: map[int]*member{}, logged: map[string]bool{}, stop: make(chan struct{})}
	h.gatherInterval, h.scrapeTimeout = e.intervals()
	h.registry = prometheus.NewRegistry()
	h.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clusterflock_metrics_worker_errors_total",
		Help: "Worker metrics the supervisor could not use, by reason: gather (the worker's registry failed), malformed, oversized (its channel was cut), conflict (a family refused at merge), timeout (no fresh snapshot within ScrapeTimeout).",
	}, []string{"reason"})
	for _, r := range []string{"gather", "malformed", "oversized", "conflict", "timeout"} {
		h.errs.WithLabelValues(r)
	}
	h.pool = newPoolMetrics(cfg.Pool, cfg.Queues)
	h.registry.MustRegister(h.errs, h.pool,
		prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{Namespace: "clusterflock_supervisor"}))
	if cfg.Handover != nil {
		h.wg.Go(func() { h.inherit(cfg.Handover, e.Addr) })
	} else {
		ln, err := net.Listen("tcp", e.Addr)
		if err != nil {
			return nil, fmt.Errorf("clusterflock/metrics: cannot serve /metrics on Exporter.Addr %q: %w", e.Addr, err)
		}
		h.serve(ln)
	}
	h.wg.Go(h.tick)
	return h, nil
}

// serve serves /metrics on ln, unless the hub is closed.
func (h *hub) serve(ln net.Listener) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.Gatherers{gathererFunc(h.poolFamilies), gathererFunc(h.workerFamilies)},
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true, MaxRequestsInFlight: 4,
			ErrorLog: slogPrinter{h.log}}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		ln.Close()
		return
	}
	h.srv = srv
	h.ln, _ = ln.(*net.TCPListener)
	h.log.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
	h.wg.Go(func() { _ = srv.Serve(ln) })
}

type gathererFunc func() ([]*dto.MetricFamily, error)

func (f gathererFunc) Gather() ([]*dto.MetricFamily, error) { return f() }

// slogPrinter is promhttp's error log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.log.Warn("metrics: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

// tick asks every worker for a snapshot each GatherInterval.
func (h *hub) tick() {
	t := time.NewTicker(h.gatherInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			h.request()
		}
	}
}

// request asks every worker for a snapshot; it returns what to wait on:
// each member's changed channel.
func (h *hub) request() []chan struct{} {
	h.mu.Lock()
	conns := make([]net.Conn, 0, len(h.members))
	waits := make([]chan struct{}, 0, len(h.members))
	for _, m := range h.members {
		conns, waits = append(conns, m.conn), append(waits, m.changed)
	}
	h.mu.Unlock()
	for _, c := range conns {
		// A worker that does not read leaves its socket buffer full: the
		// write fails at once rather than waiting for it.
		c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		_, _ = c.Write([]byte{gatherByte})
	}
	return waits
}

// Attach implements plug.Supervisor.
func (h *hub) Attach(pid int, ch *os.File) {
	conn, err := net.FileConn(ch)
	ch.Close()
	if err != nil {
		h.log.Warn("metrics: cannot use a worker's metrics channel", "pid", pid, "err", err.Error())
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		conn.Close()
		return
	}
	h.nextSeq++
	m := &member{pid: pid, seq: h.nextSeq, conn: conn, changed: make(chan struct{})}
	h.members[pid] = m
	h.wg.Go(func() { h.read(m) })
}

// read takes m's frames until its channel ends; then m's last totals are
// kept. A frame that cannot be used is the worker's failure: logged and
// counted, never the supervisor's.
func (h *hub) read(m *member) {
	defer h.leave(m)
	for {
		kind, body, err := readFrame(m.conn)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				reason := "malformed"
				if errors.Is(err, errTooLarge) {
					reason = "oversized"
				}
				h.errs.WithLabelValues(reason).Inc()
				h.log.Error("metrics: a worker's metrics channel is cut: its last snapshot stays", "pid", m.pid, "err", err.Error())
			}
			return
		}
		if kind == frameError {
			h.refused(m, "gather", "metrics: a worker's registry failed to gather (logged once a worker; counted in clusterflock_metrics_worker_errors_total)", string(body))
			continue
		}
		s, err := decodeSnapshot(body)
		if err != nil {
			h.refused(m, "malformed", "metrics: refused a worker's snapshot: its previous one stays (logged once a worker; counted in clusterflock_metrics_worker_errors_total)", err.Error())
			continue
		}
		h.update(m, s)
	}
}

// refused counts a frame of m that could not be used, and logs the first.
func (h *hub) refused(m *member, reason, msg, detail string) {
	h.errs.WithLabelValues(reason).Inc()
	if !m.warned {
		m.warned = true
		h.log.Warn(msg, "pid", m.pid, "reason", reason, "err", detail)
	}
}

// update makes s m's snapshot, keeping what m reset or dropped.
func (h *hub) update(m *member, s set) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m.snap != nil {
		h.kept.keep(resets(m.snap, s))
	}
	m.snap = s
	m.frames++
	close(m.changed)
	m.changed = make(chan struct{})
}

// leave keeps m's last totals: m's worker is gone.
func (h *hub) leave(m *member) {
	m.conn.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kept.keep(m.snap)
	m.snap = nil
	delete(h.members, m.pid)
	close(m.changed)
	if len(h.members) == 0 && h.empty != nil {
		close(h.empty)
		h.empty = nil
	}
}

// Event implements plug.Supervisor.
func (h *hub) Event(ev supervisor.Event) { h.pool.event(ev) }

// workerFamilies is the merged workers' metrics, fresh: each worker is asked
// for a snapshot, and waited for up to ScrapeTimeout.
func (h *hub) workerFamilies() ([]*dto.MetricFamily, error) {
	waits := h.request()
	limit := time.NewTimer(h.scrapeTimeout)
	defer limit.Stop()
	timedOut := false
	for _, w := range waits {
		if !timedOut {
			select {
			case <-w:
				continue
			case <-limit.C:
				timedOut = true
			}
		}
		select {
		case <-w:
		default:
			h.errs.WithLabelValues("timeout").Inc() // shown with its last snapshot
		}
	}
	out, refused := h.merged()
	h.conflicts(refused)
	return out.families(), nil
}

// conflicts counts the families refused at a merge, and logs each name
// the first time (not at every scrape).
func (h *hub) conflicts(refused []string) {
	var fresh []string
	h.mu.Lock()
	for _, name := range refused {
		h.errs.WithLabelValues("conflict").Inc()
		if !h.logged[name] {
			h.logged[name] = true
			fresh = append(fresh, name)
		}
	}
	h.mu.Unlock()
	if len(fresh) > 0 {
		h.log.Warn("metrics: families refused from some worker (a type differing from another worker's, a per-slot gauge with a \"slot\" label, or a name under clusterflock_ other than clusterflock_http_); logged once, counted in clusterflock_metrics_worker_errors_total{reason=\"conflict\"}",
			"families", strings.Join(fresh, ", "))
	}
}

// merged merges kept and the live members' snapshots.
func (h *hub) merged() (set, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := make([]*member, 0, len(h.members))
	for _, m := range h.members {
		if m.snap != nil {
			ms = append(ms, m)
		}
	}
	slices.SortFunc(ms, func(a, b *member) int { return a.seq - b.seq })
	live := make([]contribution, len(ms))
	for i, m := range ms {
		slot, gen := h.pool.slotOf(m.pid)
		live[i] = contribution{slot: slot, generation: gen, snap: m.snap}
	}
	return merge(h.kept, live, h.perSlot, reserved)
}

// reserved names the families only the supervisor shows.
func reserved(name string) bool {
	return strings.HasPrefix(name, "clusterflock_") && !strings.HasPrefix(name, "clusterflock_http_")
}

// poolFamilies is the pool's own metrics, with the counters an old
// supervisor handed over added.
func (h *hub) poolFamilies() ([]*dto.MetricFamily, error) {
	mfs, err := h.registry.Gather()
	own, serr := newSet(mfs)
	if serr != nil {
		return mfs, errors.Join(err, serr)
	}
	h.mu.Lock()
	carried := h.carried
	h.mu.Unlock()
	if len(carried) == 0 {
		return mfs, err
	}
	out, _ := merge(carried, []contribution{{slot: -1, snap: own}}, nil, func(string) bool { return false })
	return out.families(), err
}

// Close implements plug.Supervisor.
func (h *hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	srv := h.srv
	if h.handover != nil {
		h.handover.SetReadDeadline(time.Now())
	}
	for _, m := range h.members {
		m.conn.SetReadDeadline(time.Now())
	}
	h.mu.Unlock()
	close(h.stop)
	var err error
	if srv != nil {
		err = srv.Close()
	}
	h.wg.Wait()
	return err
}
