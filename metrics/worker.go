package metrics

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// finalWrite bounds the worker's last frame, its gather included: a
// supervisor that does not read it, or a registry slow to gather, must
// not hold the worker's exit (the supervisor keeps the last snapshot
// before it).
const finalWrite = 2 * time.Second

// serveWrite bounds each other frame's write: a supervisor that stops
// reading its channel cuts it, rather than holding a goroutine.
const serveWrite = 10 * time.Second

// errGaveUp is a final snapshot not sent within finalWrite.
var errGaveUp = errors.New("clusterflock/metrics: the final snapshot was not sent within " + finalWrite.String())

// worker is the exporter in a worker process: it answers the supervisor's
// gathers on the metrics channel and counts Run's HTTP requests.
type worker struct {
	conn     net.Conn
	gatherer prometheus.Gatherer
	limit    int          // Exporter.MaxSeries
	http     *httpMetrics // nil for Serve
	log      *slog.Logger
	mu       sync.Mutex // one frame at a time
	broken   bool       // a write failed: the channel may end inside a frame
	done     chan struct{}
}

// outFrame is one frame to send.
type outFrame struct {
	kind byte
	body []byte
}

// Worker implements the pool's seam (Options.Metrics); programs do not call it.
func (e *Exporter) Worker(cfg plug.WorkerConfig, ch *os.File) (plug.Worker, error) {
	conn, err := net.FileConn(ch)
	ch.Close()
	if err != nil {
		return nil, errors.New("clusterflock/metrics: the metrics channel: " + err.Error())
	}
	reg := prometheus.NewRegistry()
	w := &worker{conn: conn, log: cfg.Logger, limit: e.maxSeries(), done: make(chan struct{})}
	if cfg.HTTP {
		w.http = newHTTPMetrics(reg)
	}
	w.gatherer = prometheus.Gatherers{e.gatherer(), reg}
	go w.serve()
	return w, nil
}

// serve answers each gather byte (those that arrived together, once) with
// a snapshot, until the channel closes or Close stops it.
func (w *worker) serve() {
	defer close(w.done)
	buf := make([]byte, 64)
	for {
		if _, err := w.conn.Read(buf); err != nil {
			return
		}
		fs, err := w.gather()
		if err == nil {
			err = w.write(fs, time.Now().Add(serveWrite))
		}
		if err != nil {
			return
		}
	}
}

// gather gathers one snapshot: an error frame if the gather was
// incomplete, a cut frame if it holds more than MaxSeries series (cut
// down, the largest families first), then the snapshot. The host's
// families (hostWide) are left out.
func (w *worker) gather() ([]outFrame, error) {
	mfs, gerr := w.gatherer.Gather()
	mfs = slices.DeleteFunc(mfs, func(mf *dto.MetricFamily) bool { return hostWide(mf.GetName()) })
	sizes := make([]int, len(mfs))
	for i, mf := range mfs {
		sizes[i] = len(mf.Metric)
	}
	var fs []outFrame
	if gerr != nil {
		fs = append(fs, outFrame{frameError, []byte(gerr.Error())})
	}
	if c := seriesCap(sizes, w.limit); c >= 0 {
		var cut cutSeries
		for _, mf := range mfs {
			if len(mf.Metric) > c {
				cut.cutFamily(mf.GetName(), len(mf.Metric)-c)
				mf.Metric = mf.Metric[:c] // in label order, as gathered
			}
		}
		fs = append(fs, outFrame{frameCut, cut.encode()})
	}
	body, err := encodeFamilies(mfs)
	if err != nil {
		return nil, err
	}
	return append(fs, outFrame{frameSnapshot, body}), nil
}

// write writes fs, with deadline. After a failed write (which may have
// sent part of a frame) nothing more is written.
func (w *worker) write(fs []outFrame, deadline time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken {
		return errors.New("clusterflock/metrics: the metrics channel is broken")
	}
	w.conn.SetWriteDeadline(deadline)
	for _, f := range fs {
		if err := writeFrame(w.conn, f.kind, f.body); err != nil {
			w.broken = !errors.Is(err, errTooLarge)
			return err
		}
	}
	return nil
}

// Close implements plug.Worker: the final snapshot, then the channel
// closes, within finalWrite whatever the registry or the supervisor do.
func (w *worker) Close() error {
	defer w.conn.Close()
	deadline := time.Now().Add(finalWrite)
	limit := time.NewTimer(time.Until(deadline))
	defer limit.Stop()
	w.conn.SetReadDeadline(time.Now()) // ends serve's wait for a gather byte; a frame it is writing is finished
	select {
	case <-w.done:
	case <-limit.C:
		return errGaveUp
	}
	type result struct {
		fs  []outFrame
		err error
	}
	gathered := make(chan result, 1) // a gather that outlives Close ends with the process
	go func() {
		fs, err := w.gather()
		gathered <- result{fs, err}
	}()
	select {
	case r := <-gathered:
		if r.err != nil {
			return r.err
		}
		return w.write(r.fs, deadline)
	case <-limit.C:
		return errGaveUp
	}
}

// Handler implements plug.Worker.
func (w *worker) Handler(h http.Handler) http.Handler {
	if w.http == nil {
		return h
	}
	return w.http.wrap(h)
}

// httpMetrics are Run's request metrics, counted in each worker by one
// wrapper (wrap): an in-flight gauge, one duration observation and one
// counter increment per request, the counter's child for each status code
// looked up once.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	inFlight prometheus.Gauge
	// codes[c] is requests' child for status c (100..599), filled on
	// first use; other codes are looked up by label each time.
	codes [600]atomic.Pointer[prometheus.Counter]
}

func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clusterflock_http_requests_total",
			Help: "HTTP requests served by the pool's workers, by status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clusterflock_http_request_duration_seconds",
			Help:    "Time from a request's arrival in the handler to its handler's return.",
			Buckets: prometheus.DefBuckets,
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clusterflock_http_requests_in_flight",
			Help: "HTTP requests being served by the pool's workers.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inFlight)
	return m
}

// wrap counts h's requests, as promhttp's InstrumentHandlerInFlight,
// Duration and Counter did, in one wrapper: the gauge is held while h runs
// (also when it panics); a request is timed and counted when h returns,
// under the status it answered with (200 if h never wrote a header: a
// hijacked connection, an empty response). Unlike promhttp, a superfluous
// WriteHeader after the response's status does not change the code.
func (m *httpMetrics) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.inFlight.Inc()
		defer m.inFlight.Dec()
		sw := statusWriter{ResponseWriter: w}
		start := time.Now()
		h.ServeHTTP(&sw, r)
		m.duration.Observe(time.Since(start).Seconds())
		m.counter(sw.status).Inc()
	})
}

// counter is requests' child for status code (0: 200).
func (m *httpMetrics) counter(code int) prometheus.Counter {
	if code == 0 {
		code = http.StatusOK
	}
	if code < 100 || code >= len(m.codes) {
		return m.requests.WithLabelValues(strconv.Itoa(code))
	}
	if c := m.codes[code].Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(strconv.Itoa(code))
	m.codes[code].Store(&c) // a racing first use stores the same child
	return c
}

// statusWriter records the status a handler answers with: the first
// final WriteHeader (an informational 1xx other than 101 may precede
// it), or 200 at the first Write, ReadFrom or Flush. It offers Flush,
// Hijack and ReadFrom (sendfile) whether or not the writer it wraps does,
// and Unwrap for http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	status int  // 0 until a header is written
	final  bool // status is the response's, not informational
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.final {
		w.status = code
		w.final = code >= 200 || code == http.StatusSwitchingProtocols || code < 100
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) implicit() {
	if !w.final {
		w.status, w.final = http.StatusOK, true
	}
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.implicit()
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps io.Copy to the response on net/http's sendfile path.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	w.implicit()
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{w.ResponseWriter}, r)
}

// writerOnly hides a writer's ReadFrom (io.Copy must not call back).
type writerOnly struct{ io.Writer }

func (w *statusWriter) Flush() {
	w.implicit()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
