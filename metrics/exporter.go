// Package metrics serves one Prometheus /metrics for a whole clusterflock
// pool, from the supervisor, with counters that never go backwards.
//
// Plug it in with one field:
//
//	opts.Metrics = &metrics.Exporter{Addr: "127.0.0.1:9100"}
//
// The supervisor then serves GET /metrics on Addr (the Prometheus text
// format, or OpenMetrics when the scraper asks for it). It shows:
//
//   - Each worker's own registry (Exporter.Gatherer), gathered by the
//     supervisor over the pool's private channel to the worker (no port per
//     worker) and merged by metric name and labels: counters, and the
//     counts and sums of histograms and summaries, are added across
//     workers (histogram buckets by upper bound; summary quantiles, which
//     cannot be combined across processes, are dropped). Gauges are summed,
//     which is right for quantities (goroutines, bytes, open connections,
//     requests in flight) and meaningless for values such as a start time,
//     a build-info 1, a last-success timestamp or a configured limit: name
//     those in Exporter.PerSlot to see them per worker slot instead.
//   - The pool's own metrics, prefixed clusterflock_ (see the README for
//     the list), and with Run, clusterflock_http_requests_total{code},
//     clusterflock_http_request_duration_seconds and
//     clusterflock_http_requests_in_flight, counted in every worker.
//
// Counters never go backwards: a worker that exits (retired, recycled,
// replaced by a rolling restart, stopped) contributes its last totals
// forever, a series a worker drops or resets keeps its last value, and a
// binary upgrade (SIGUSR2) hands the totals and the metrics listener to the
// new supervisor. The one exception: a worker killed abruptly (SIGKILL,
// the OOM killer, a crash) loses what it counted since its last gather,
// which is at most Exporter.GatherInterval old.
//
// The supervisor stays small whatever the workers register:
// Exporter.MaxSeries bounds the merged series, the gone workers' totals
// included (see clusterflock_metrics_series_refused). Counters the process
// collector takes from the whole network namespace
// (process_network_*_bytes_total) are not summed over workers: the
// supervisor shows its own, once.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Exporter serves the pool's merged metrics. Set it as Options.Metrics; its
// fields are read when the pool starts.
type Exporter struct {
	// Addr is the TCP address the supervisor serves /metrics on,
	// "host:port" (required). A bad or taken address is an error when the
	// pool starts, before any worker is forked.
	Addr string
	// Gatherer is each worker's registry. nil means
	// prometheus.DefaultGatherer (the Go and process collectors, and what
	// the program registered with prometheus.MustRegister).
	Gatherer prometheus.Gatherer
	// PerSlot names gauges that are not summed across workers but shown
	// once per worker slot, with a "slot" label (the newest worker of each
	// slot). A gauge that already has a "slot" label cannot be. nil means
	// DefaultPerSlot(); an empty, non-nil slice sums every gauge.
	PerSlot []string
	// GatherInterval is how often the supervisor gathers every worker
	// even without a scrape: it bounds what an abruptly killed worker's
	// counters lose. 0 means 1s; negative is an error.
	GatherInterval time.Duration
	// ScrapeTimeout bounds how long a scrape waits for the workers' fresh
	// snapshots: a worker that has not answered by then (wedged, or busy)
	// is shown with its last one. 0 means 250ms; negative is an error.
	ScrapeTimeout time.Duration
	// MaxSeries bounds the series (label sets, over every family) of the
	// merged workers' metrics, the totals of workers gone included, and of
	// each worker's snapshot: what keeps the supervisor small when a
	// program mints label values. A worker's snapshot beyond it is cut
	// down, its largest families first (so that one family's leak does
	// not push out the others); a counter, histogram or summary series
	// once shown that a cut leaves out is shown at its last value (not
	// counted twice when it comes back, and not counted as refused). At
	// the merge, series beyond it are refused (those already shown keep
	// their place, so no counter goes backwards). What is left out is
	// counted in clusterflock_metrics_series_refused and logged once.
	//
	// A counter, histogram or summary series once shown keeps its place
	// for the supervisor's life, as the total of its gone workers if none
	// reports it any more, and through a binary upgrade's hand-over: once
	// those fill MaxSeries, every new series is refused (series_refused
	// stays above 0 at every scrape). Only a new supervisor, or an upgrade
	// to a larger MaxSeries, makes room (see the README). 0 means
	// DefaultMaxSeries; negative is an error.
	MaxSeries int
}

// DefaultMaxSeries is Exporter.MaxSeries' default: with it, workers that
// mint 400,000 label values leave the supervisor under 300 MB.
const DefaultMaxSeries = 50_000

// DefaultPerSlot returns the gauges of client_golang's Go and process
// collectors whose sum across workers means nothing: start times, limits,
// settings, the build-info 1.
func DefaultPerSlot() []string {
	return []string{
		"go_gc_gogc_percent", "go_gc_gomemlimit_bytes", "go_info", "go_memstats_last_gc_time_seconds",
		"go_sched_gomaxprocs_threads", "process_max_fds", "process_start_time_seconds", "process_virtual_memory_max_bytes",
	}
}

func (e *Exporter) perSlot() map[string]bool {
	names := e.PerSlot
	if names == nil {
		names = DefaultPerSlot()
	}
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func (e *Exporter) gatherer() prometheus.Gatherer {
	if e.Gatherer != nil {
		return e.Gatherer
	}
	return prometheus.DefaultGatherer
}

func (e *Exporter) maxSeries() int {
	if e.MaxSeries == 0 {
		return DefaultMaxSeries
	}
	return e.MaxSeries
}

func (e *Exporter) intervals() (gather, scrape time.Duration) {
	gather, scrape = e.GatherInterval, e.ScrapeTimeout
	if gather == 0 {
		gather = time.Second
	}
	if scrape == 0 {
		scrape = 250 * time.Millisecond
	}
	return gather, scrape
}
