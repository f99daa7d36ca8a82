package metrics

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// finalWrite bounds the worker's last frame: a supervisor that does not
// read it must not hold the worker's exit.
const finalWrite = 2 * time.Second

// worker is the exporter in a worker process: it answers the supervisor's
// gathers on the metrics channel and counts Run's HTTP requests.
type worker struct {
	conn     net.Conn
	gatherer prometheus.Gatherer
	http     *httpMetrics // nil for Serve
	log      *slog.Logger
	mu       sync.Mutex // one frame at a time
	done     chan struct{}
}

// Worker implements the pool's seam (Options.Metrics); programs do not call it.
func (e *Exporter) Worker(cfg plug.WorkerConfig, ch *os.File) (plug.Worker, error) {
	conn, err := net.FileConn(ch)
	ch.Close()
	if err != nil {
		return nil, errors.New("clusterflock/metrics: the metrics channel: " + err.Error())
	}
	reg := prometheus.NewRegistry()
	w := &worker{conn: conn, log: cfg.Logger, done: make(chan struct{})}
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
		if err := w.send(time.Time{}); err != nil {
			return
		}
	}
}

// send gathers and writes one snapshot (preceded by an error frame if the
// gather was incomplete), with deadline if not zero.
func (w *worker) send(deadline time.Time) error {
	mfs, gerr := w.gatherer.Gather()
	body, err := encodeFamilies(mfs)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conn.SetWriteDeadline(deadline)
	if gerr != nil {
		if err := writeFrame(w.conn, frameError, []byte(gerr.Error())); err != nil {
			return err
		}
	}
	return writeFrame(w.conn, frameSnapshot, body)
}

// Handler implements plug.Worker.
func (w *worker) Handler(h http.Handler) http.Handler {
	if w.http == nil {
		return h
	}
	return w.http.wrap(h)
}

// Close implements plug.Worker: the final snapshot, then the channel closes.
func (w *worker) Close() error {
	w.conn.SetDeadline(time.Now()) // serve's read, or a write the supervisor does not take
	<-w.done
	err := w.send(time.Now().Add(finalWrite))
	if cerr := w.conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// httpMetrics are Run's request metrics, counted in each worker.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec // no labels: no wrapped ResponseWriter
	inFlight prometheus.Gauge
}

func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clusterflock_http_requests_total",
			Help: "HTTP requests served by the pool's workers, by status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clusterflock_http_request_duration_seconds",
			Help:    "Time from a request's arrival in the handler to its handler's return.",
			Buckets: prometheus.DefBuckets,
		}, nil),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clusterflock_http_requests_in_flight",
			Help: "HTTP requests being served by the pool's workers.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inFlight)
	return m
}

func (m *httpMetrics) wrap(h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerInFlight(m.inFlight,
		promhttp.InstrumentHandlerDuration(m.duration,
			promhttp.InstrumentHandlerCounter(m.requests, h)))
}
