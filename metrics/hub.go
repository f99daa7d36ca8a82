package metrics

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
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
	series         prometheus.Gauge     // the merged workers' series at the last scrape
	refusedSeries  prometheus.Gauge     // series left out at the last scrape (MaxSeries)
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
	admit    *admission      // Exporter.MaxSeries; its shown holds kept's keys too
	limited  bool            // a series refused for MaxSeries was logged
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
	cut     int           // series left out of snap (MaxSeries)
	cutNext cutSeries     // left out of the next snapshot, as its worker said
}

// Supervisor implements the pool's seam (Options.Metrics); programs do not
// call it.
func (e *Exporter) Supervisor(cfg plug.SupervisorConfig) (plug.Supervisor, error) {
	if e.Addr == "" {
		return nil, errors.New("clusterflock/metrics: Exporter.Addr is empty; say where to serve /metrics, for example \"127.0.0.1:9100\"")
	}
	if e.GatherInterval < 0 || e.ScrapeTimeout < 0 || e.MaxSeries < 0 {
		return nil, fmt.Errorf("clusterflock/metrics: negative Exporter.GatherInterval (%v), ScrapeTimeout (%v) or MaxSeries (%d)", e.GatherInterval, e.ScrapeTimeout, e.MaxSeries)
	}
	h := &hub{log: cfg.Logger, perSlot: e.perSlot(), kept: set{}, carried: set{}, admit: &admission{limit: e.maxSeries()},
		members: map[int]*member{}, logged: map[string]bool{}, stop: make(chan struct{})}
	h.gatherInterval, h.scrapeTimeout = e.intervals()
	h.registry = prometheus.NewRegistry()
	h.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clusterflock_metrics_worker_errors_total",
		Help: "Worker metrics the supervisor could not use, by reason: gather (the worker's registry failed), malformed, oversized (its channel was cut), interrupted (its channel closed inside a frame: the worker was killed, or gave up its final frame, while sending), conflict (a family refused at merge), timeout (no fresh snapshot within ScrapeTimeout).",
	}, []string{"reason"})
	for _, r := range []string{"gather", "malformed", "oversized", "interrupted", "conflict", "timeout"} {
		h.errs.WithLabelValues(r)
	}
	h.series = prometheus.NewGauge(prometheus.GaugeOpts{Name: "clusterflock_metrics_series",
		Help: "Series of the merged workers' metrics at the last scrape (at most Exporter.MaxSeries)."})
	h.refusedSeries = prometheus.NewGauge(prometheus.GaugeOpts{Name: "clusterflock_metrics_series_refused",
		Help: "Series left out at the last scrape because of Exporter.MaxSeries: cut from the workers' snapshots (counted once a worker) or refused at the merge."})
	h.pool = newPoolMetrics(cfg.Pool, cfg.Queues)
	h.registry.MustRegister(h.errs, h.series, h.refusedSeries, h.pool,
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
	mux.Handle("GET /metrics", &scrapeHandler{
		gather: promhttp.HandlerFor(prometheus.Gatherers{gathererFunc(h.poolFamilies), gathererFunc(h.workerFamilies)},
			promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true, ErrorLog: slogPrinter{h.log}}),
		gathers: make(chan struct{}, maxGathers),
		writes:  make(chan struct{}, maxWrites),
		write:   scrapeWrite,
	})
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

// A scrape gathers and encodes its response into memory, at most
// maxGathers at once, then writes it within scrapeWrite: a client that
// does not read its response holds no gather, and is cut off.
const (
	maxGathers  = 4
	maxWrites   = 32 // responses being written (each holds its bytes); beyond, 503
	scrapeWrite = 10 * time.Second
)

// scrapeHandler serves GET /metrics with gather, buffered (see maxGathers).
type scrapeHandler struct {
	gather          http.Handler
	gathers, writes chan struct{}
	write           time.Duration // each response's write deadline: scrapeWrite
}

// ServeHTTP answers one scrape. Every response, a 503 included, is
// written within s.write of its start (the write of a gathered one within
// s.write of the gather's end), whatever deadline an earlier response left
// on the connection. The slots are released however the gather ends, a
// panic included (net/http recovers it; a leaked slot would turn every
// later scrape into a 503).
func (s *scrapeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(s.write))
	select {
	case s.writes <- struct{}{}:
		defer func() { <-s.writes }()
	default:
		http.Error(w, "too many scrapes being answered", http.StatusServiceUnavailable)
		return
	}
	b, ok := s.gathered(r)
	if !ok {
		http.Error(w, "too many scrapes gathering", http.StatusServiceUnavailable)
		return
	}
	_ = rc.SetWriteDeadline(time.Now().Add(s.write))
	for k, v := range b.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(b.body.Len()))
	w.WriteHeader(cmp.Or(b.code, http.StatusOK))
	_, _ = w.Write(b.body.Bytes())
}

// gathered is r's response, gathered into memory in a gather slot; false
// if none is free.
func (s *scrapeHandler) gathered(r *http.Request) (*bufferedResponse, bool) {
	select {
	case s.gathers <- struct{}{}:
		defer func() { <-s.gathers }()
	default:
		return nil, false
	}
	b := &bufferedResponse{header: http.Header{}}
	s.gather.ServeHTTP(b, r)
	return b, true
}

// bufferedResponse is a response held in memory.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }

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
			h.ended(m, err)
			return
		}
		switch kind {
		case frameError:
			h.refused(m, "gather", "metrics: a worker's registry failed to gather (logged once a worker; counted in clusterflock_metrics_worker_errors_total)", string(body))
			continue
		case frameCut:
			c, err := parseCut(body)
			if err != nil {
				h.refused(m, "malformed", "metrics: refused a worker's account of cut series (logged once a worker; counted in clusterflock_metrics_worker_errors_total)", err.Error())
			}
			m.cutNext = c
			continue
		}
		s, cut, err := decodeSnapshot(body, h.admit.limit)
		workerCut := m.cutNext
		m.cutNext = cutSeries{} // it told of this snapshot alone
		if err != nil {
			h.refused(m, "malformed", "metrics: refused a worker's snapshot: its previous one stays (logged once a worker; counted in clusterflock_metrics_worker_errors_total)", err.Error())
			continue
		}
		h.update(m, s, workerCut.plus(cut))
	}
}

// ended counts and logs the end of m's channel on err, unless it ended
// between frames (the worker exited) or the hub closed it. A worker gone
// inside a frame (killed while it sent, or out of time for its final
// frame) is no fault of its data: counted as interrupted, logged at Info.
func (h *hub) ended(m *member, err error) {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed), errors.Is(err, io.EOF):
	case errors.Is(err, errInterrupted):
		h.errs.WithLabelValues("interrupted").Inc()
		h.log.Info("metrics: a worker's channel closed inside a frame (the worker was killed, or its final frame ran out of time): its last snapshot stays", "pid", m.pid, "err", err.Error())
	default:
		reason := "malformed"
		if errors.Is(err, errTooLarge) {
			reason = "oversized"
		}
		h.errs.WithLabelValues(reason).Inc()
		h.log.Error("metrics: a worker's metrics channel is cut: its last snapshot stays", "pid", m.pid, "err", err.Error())
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

// update makes s m's snapshot (cut series left out of it), keeping what m
// reset or dropped. A cumulative series of m's that is missing from s in a
// family cut is no reset: if it was shown, s carries its last value (m's,
// until m leaves or sends it again; not counted as cut); if not, it stays
// out (a cut series folded into kept would count twice once it came back).
func (h *hub) update(m *member, s set, cut cutSeries) {
	h.mu.Lock()
	defer h.mu.Unlock()
	carried := 0
	if m.snap != nil {
		carried = carry(m.snap, s, cut.families, h.admit.has)
		h.fold(resets(m.snap, s, cut.families))
	}
	m.snap, m.cut = s, max(cut.n-carried, 0)
	m.frames++
	close(m.changed)
	m.changed = make(chan struct{})
}

// leave keeps m's last totals: m's worker is gone.
func (h *hub) leave(m *member) {
	m.conn.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fold(m.snap)
	m.snap = nil
	delete(h.members, m.pid)
	close(m.changed)
	if len(h.members) == 0 && h.empty != nil {
		close(h.empty)
		h.empty = nil
	}
}

// fold adds the cumulative series of from into the kept totals: one sum a
// series, whichever workers counted it. A series takes a place of
// MaxSeries: those shown (or kept) already always fold; a new one folds
// while there is room, and is otherwise dropped (never shown, it cannot go
// backwards). h.mu is held.
func (h *hub) fold(from set) {
	if len(from) == 0 {
		return
	}
	a := h.admit
	room := a.limit
	for _, ks := range a.shown {
		room -= len(ks)
	}
	for _, f := range from {
		if !cumulative(f.typ) {
			continue
		}
		for key, m := range f.series {
			if !a.has(f.name, key) {
				if room <= 0 {
					continue
				}
				room--
				if a.shown == nil {
					a.shown = map[string]map[string]bool{}
				}
				if a.shown[f.name] == nil {
					a.shown[f.name] = map[string]bool{}
				}
				a.shown[f.name][key] = true
			}
			h.kept.add(f, key, m, nil)
		}
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
	h.limits(out.len())
	return out.families(), nil
}

// limits sets the series gauges after a merge, and logs the first time
// MaxSeries left series out.
func (h *hub) limits(shown int) {
	h.mu.Lock()
	left := h.admit.refused
	for _, m := range h.members {
		left += m.cut
	}
	first := left > 0 && !h.limited
	h.limited = h.limited || first
	h.mu.Unlock()
	h.series.Set(float64(shown))
	h.refusedSeries.Set(float64(left))
	if first {
		h.log.Warn("metrics: the workers' metrics have more series than Exporter.MaxSeries: series beyond it are left out (logged once; counted in clusterflock_metrics_series_refused)",
			"max_series", h.admit.limit, "shown", shown, "refused", left)
	}
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
	return mergeBounded(h.kept, live, h.perSlot, reserved, h.admit)
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
