package metrics

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterflock/clusterflock/internal/guard"
	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/clusterflock/clusterflock/supervisor"
	"github.com/prometheus/client_golang/prometheus"
)

// Worker exit reasons, the values of clusterflock_worker_exits_total's
// reason label.
const (
	exitCrash     = "crash"     // exited on its own, or before it was ready, or broke the protocol
	exitSignal    = "signal"    // killed by a signal nobody in the pool sent (the OOM killer, an operator)
	exitHeartbeat = "heartbeat" // killed: no heartbeat within HeartbeatTimeout
	exitRecycled  = "recycled"  // replaced after MaxRequests
	exitRetired   = "retired"   // retired by TTOU (or a scale-down)
	exitUpgrade   = "upgrade"   // replaced by a rolling restart (HUP) or a binary upgrade (USR2)
	exitStop      = "stop"      // the pool stopped
	exitStuck     = "stuck"     // replaced: its requests made no progress (StuckTimeout)
	exitMemory    = "memory"    // replaced: its RSS stayed above MemoryLimit
)

// poolMetrics counts the pool's events and reports its state.
type poolMetrics struct {
	snapshot func() supervisor.Snapshot
	queues   func() ([]plug.Queue, error)
	exits    *prometheus.CounterVec
	spawns   prometheus.Counter
	ready    prometheus.Histogram
	reloads  *prometheus.CounterVec
	upgrades *prometheus.CounterVec
	workers  *prometheus.Desc
	desired  *prometheus.Desc
	queue    *prometheus.Desc
	backlog  *prometheus.Desc
	rss      *prometheus.Desc

	mu       sync.Mutex
	known    map[int]known // by pid
	rolling  bool          // a rolling restart is under way
	upgraded bool          // a binary upgrade is done: this pool is stopping for it
}

// known is what the events told of a live worker.
type known struct {
	slot, generation int
	why              string // the exit reason its first stop or kill gave
}

func newPoolMetrics(snapshot func() supervisor.Snapshot, queues func() ([]plug.Queue, error)) *poolMetrics {
	p := &poolMetrics{
		snapshot: snapshot,
		queues:   queues,
		known:    map[int]known{},
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clusterflock_worker_exits_total",
			Help: "Worker exits by reason: crash, signal, heartbeat, recycled, retired, upgrade, stop, stuck, memory."}, []string{"reason"}),
		spawns: prometheus.NewCounter(prometheus.CounterOpts{Name: "clusterflock_worker_spawns_total",
			Help: "Workers forked."}),
		ready: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "clusterflock_worker_spawn_to_ready_seconds",
			Help:    "Time from a worker's fork to its first ready report.",
			Buckets: []float64{.005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10}}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clusterflock_reloads_total",
			Help: "Rolling restarts (SIGHUP, flockctl reload) by result: done, aborted, refused."}, []string{"result"}),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clusterflock_upgrades_total",
			Help: "Binary upgrades (SIGUSR2, flockctl upgrade) by result: done, failed, refused."}, []string{"result"}),
		workers: prometheus.NewDesc("clusterflock_workers", "Live workers by state.", []string{"state"}, nil),
		desired: prometheus.NewDesc("clusterflock_workers_desired", "The slots that should have a worker.", nil, nil),
		queue: prometheus.NewDesc("clusterflock_accept_queue_connections",
			"Connections waiting in the accept queues of the pool's listening sockets.", nil, nil),
		backlog: prometheus.NewDesc("clusterflock_accept_queue_capacity",
			"The summed backlog of the pool's listening sockets.", nil, nil),
		rss: prometheus.NewDesc("clusterflock_worker_resident_bytes",
			"Each live worker's resident set (Linux /proc), by slot and pid.", []string{"slot", "pid"}, nil),
	}
	// Every label value exists from the start, at 0: a rate over the first
	// exit of a kind is then computed, not missed.
	for _, r := range []string{exitCrash, exitSignal, exitHeartbeat, exitRecycled, exitRetired, exitUpgrade, exitStop, exitStuck, exitMemory} {
		p.exits.WithLabelValues(r)
	}
	for _, r := range []string{"done", "aborted", "refused"} {
		p.reloads.WithLabelValues(r)
	}
	for _, r := range []string{"done", "failed", "refused"} {
		p.upgrades.WithLabelValues(r)
	}
	return p
}

// Describe implements prometheus.Collector.
func (p *poolMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range []prometheus.Collector{p.exits, p.spawns, p.ready, p.reloads, p.upgrades} {
		c.Describe(ch)
	}
	ch <- p.workers
	ch <- p.desired
	ch <- p.queue
	ch <- p.backlog
	ch <- p.rss
}

// Collect implements prometheus.Collector.
func (p *poolMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range []prometheus.Collector{p.exits, p.spawns, p.ready, p.reloads, p.upgrades} {
		c.Collect(ch)
	}
	snap := p.snapshot()
	states := map[supervisor.State]int{supervisor.Starting: 0, supervisor.Ready: 0, supervisor.Draining: 0, supervisor.Stopping: 0}
	for _, w := range snap.Workers {
		states[w.State]++
		if rss, err := guard.Resident(w.Pid); err == nil {
			ch <- prometheus.MustNewConstMetric(p.rss, prometheus.GaugeValue, float64(rss), strconv.Itoa(w.Slot), strconv.Itoa(w.Pid))
		}
	}
	for st, n := range states {
		ch <- prometheus.MustNewConstMetric(p.workers, prometheus.GaugeValue, float64(n), string(st))
	}
	ch <- prometheus.MustNewConstMetric(p.desired, prometheus.GaugeValue, float64(snap.Desired))
	if qs, err := p.queues(); err == nil {
		var n, max int
		for _, q := range qs {
			n, max = n+q.Len, max+q.Max
		}
		ch <- prometheus.MustNewConstMetric(p.queue, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(p.backlog, prometheus.GaugeValue, float64(max))
	}
}

// slotOf is the slot and generation of worker pid, or -1 if unknown.
func (p *poolMetrics) slotOf(pid int) (slot, generation int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.known[pid]
	if !ok {
		return -1, 0
	}
	return k.slot, k.generation
}

// event counts ev. It runs on the supervisor's goroutine and never blocks.
func (p *poolMetrics) event(ev supervisor.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := ev.Worker
	switch ev.Kind {
	case supervisor.EventSpawn:
		p.spawns.Inc()
		p.known[w.Pid] = known{slot: w.Slot, generation: w.Generation}
	case supervisor.EventReady:
		k := p.known[w.Pid]
		k.slot, k.generation = w.Slot, w.Generation
		p.known[w.Pid] = k
		if !w.Started.IsZero() {
			p.ready.Observe(time.Since(w.Started).Seconds())
		}
	case supervisor.EventStop, supervisor.EventKill:
		if k, ok := p.known[w.Pid]; ok && k.why == "" {
			k.why = p.asked(ev)
			p.known[w.Pid] = k
		}
	case supervisor.EventExit:
		why := p.known[w.Pid].why
		switch {
		case why != "":
		case ev.Exit.Signal != 0:
			why = exitSignal
		default:
			why = exitCrash
		}
		p.exits.WithLabelValues(why).Inc()
		delete(p.known, w.Pid)
	default:
		p.pool(ev)
	}
}

// asked classifies the first stop or kill of a worker.
func (p *poolMetrics) asked(ev supervisor.Event) string {
	r := ev.Reason
	switch {
	case r == supervisor.ReasonRetired:
		return exitRetired
	case r == supervisor.ReasonStuck:
		return exitStuck
	case r == supervisor.ReasonMemory:
		return exitMemory
	case r == supervisor.ReasonReplaced && p.rolling:
		return exitUpgrade
	case r == supervisor.ReasonReplaced:
		return exitRecycled
	case r == supervisor.ReasonPoolStopping && p.upgraded:
		return exitUpgrade
	case strings.HasPrefix(r, supervisor.ReasonNoHeartbeat):
		return exitHeartbeat
	case strings.HasPrefix(r, supervisor.ReasonProtocol):
		return exitCrash
	}
	return exitStop
}

// pool counts the pool-wide events: restarts and upgrades.
func (p *poolMetrics) pool(ev supervisor.Event) {
	switch ev.Kind {
	case supervisor.EventRestart:
		switch {
		case ev.Reason == "begin":
			p.rolling = true
		case ev.Reason == "done":
			p.rolling = false
			p.reloads.WithLabelValues("done").Inc()
		case strings.HasPrefix(ev.Reason, "aborted"):
			p.rolling = false
			p.reloads.WithLabelValues("aborted").Inc()
		}
	case supervisor.EventUpgrade:
		switch {
		case ev.Reason == "done":
			p.upgraded = true
			p.upgrades.WithLabelValues("done").Inc()
		case strings.HasPrefix(ev.Reason, "failed"):
			p.upgrades.WithLabelValues("failed").Inc()
		}
	case supervisor.EventRefused:
		switch {
		case strings.HasPrefix(ev.Reason, "USR2:"):
			p.upgrades.WithLabelValues("refused").Inc()
		case strings.HasPrefix(ev.Reason, "HUP:"), strings.HasPrefix(ev.Reason, "rolling restart:"):
			p.reloads.WithLabelValues("refused").Inc()
		}
	}
}
