package clusterflock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/supervisor"
)

// Options configures a pool. The zero value is valid: one worker per CPU on
// ":$PORT" (or ":5000"), a one-second graceful budget, text logs on stderr.
type Options struct {
	// Workers is the number of worker processes. 0 means the CPUs this
	// process may really use: its CPU affinity, lowered to its cgroup's CPU
	// quota (rounded up) in a container, as Go's own GOMAXPROCS default
	// since Go 1.25; the start log says which ("cpus"). Negative is an
	// error. SIGTTIN and SIGTTOU change it while running; a binary
	// upgrade's (SIGUSR2) new supervisor starts the old pool's size, as
	// scaled, instead of its own Workers.
	Workers int
	// Addr is the TCP address every worker listens on, "host:port". "" means
	// ":" + $PORT, or ":5000" when PORT is unset. Port 0 picks one free port
	// for the whole pool. The port must be numeric.
	Addr string
	// ShutdownTimeout is how long a worker that is asked to stop (graceful
	// shutdown, retirement, restart) may take to finish its in-flight
	// requests before it is killed. 0 means 1s; negative is an error.
	// Meanwhile (with Run) idle keep-alive connections stay open for half
	// of it, at most 5 s, so that a client's next request on one is
	// answered (with Connection: close); hijacked connections (websockets)
	// count until their handlers close them, or are closed a little before
	// it (see [DrainStarted]).
	ShutdownTimeout time.Duration
	// Logger receives the pool's logs. nil means text logs on stderr.
	Logger *slog.Logger
	// GOMAXPROCS is the GOMAXPROCS of each worker. 0 means CPUs/Workers
	// (CPUs as for Workers: affinity and cgroup quota)
	// (at least 1), unless the GOMAXPROCS environment variable is set, which
	// is then passed on unchanged. Negative is an error.
	GOMAXPROCS int
	// HeartbeatTimeout: a worker that has not reported for this long (it is
	// stopped, or its runtime is wedged) is killed and replaced. Workers
	// report every second, or four times per HeartbeatTimeout if that is
	// shorter. It also bounds a worker's start, from fork to serving (code
	// before Run included): raise it for slow start-ups. 0 means 10s;
	// negative is an error.
	HeartbeatTimeout time.Duration
	// MaxRequests, if positive, recycles a worker after it has served that
	// many requests plus a random 0…MaxRequestsJitter: a replacement is
	// started and, once it is ready, the old worker drains and exits. 0 means
	// never; negative is an error.
	MaxRequests int
	// MaxRequestsJitter spreads recycling so workers do not recycle together.
	// 0 means none; negative is an error.
	MaxRequestsJitter int
	// RestartSurge is how many workers a rolling restart (SIGHUP) replaces
	// at once. 0 means 1; negative is an error.
	RestartSurge int
	// Server, if set, is the template of each worker's http.Server (Run
	// only): its timeouts, TLSConfig (then workers serve HTTPS), HTTP2,
	// Protocols, ErrorLog, ConnState and context hooks are used. Its Addr
	// and Handler must be unset. Unset, or zero in the template:
	// ReadHeaderTimeout 10s (no slowloris), IdleTimeout 120s.
	Server *http.Server
	// Spare keeps one extra worker started and initialised (code before Run
	// included) but not yet listening, so that a worker that dies is
	// replaced by a process that only has to open its listener; the next
	// spare starts right after. It costs one idle process. Default off.
	Spare bool
	// OnEvent, if set, is called in the supervisor for every lifecycle event
	// (spawn, ready, exit, refork, stop, kill, restart, …), for metrics or
	// alerts. It runs on the supervisor's goroutine, after the event is
	// logged, and must not block.
	OnEvent func(supervisor.Event)
	// ControlSocket is the path of the pool's control socket, which
	// cmd/flockctl and package control talk to: every action (scale,
	// reload, upgrade, stop) waits for its outcome and says it. "" means
	// control.DefaultDir()/<address>.sock; "-" turns it off. The directory
	// must be the user's own, a real directory (not a symbolic link), with
	// mode 0700: it is created so; the default directory, if the user's but
	// open to others, is made 0700 (a directory of the program's choice is
	// refused); another user's is refused, as is anything but a stale socket at
	// the socket's path (nothing there is followed or removed). The socket
	// is 0600, answers only its user and root, is removed at exit and
	// handed over by a binary upgrade. Failing to create it is not fatal:
	// the pool runs without one, and says why in an error record ("no
	// control socket") and in the start line (control_socket_error).
	ControlSocket string
	// StuckTimeout, if positive, replaces a stuck worker (Run only): one
	// that has requests in flight and makes no progress for this long,
	// where progress is a request completed, a response written to or
	// flushed, a read of a request's body that returned bytes, or a
	// connection hijacked (a websocket no longer counts as in flight), so
	// streams, slow uploads and websockets are not stuck (a stream silent
	// for longer than StuckTimeout, or a client that sends nothing, is). Before it is
	// replaced (new-before-old; its requests get ShutdownTimeout), the
	// worker writes its goroutine dump to control.DefaultDir()/stuck-<pid>-
	// <time>.txt (a new file, 0600, in a directory checked as for
	// ControlSocket; when the directory is refused there is no dump and the
	// report says why), and the log and EventStuck name the stuck requests
	// (method, path, age) and the function each blocks in: each request's
	// goroutine carries pprof labels while its handler runs. Detected
	// within StuckTimeout plus one heartbeat. 0 means off; negative is an
	// error.
	StuckTimeout time.Duration
	// MemoryLimit, if positive, is each worker's memory budget in bytes:
	// workers run with GOMEMLIMIT at this value (unless the environment
	// sets GOMEMLIMIT), and a worker whose resident set stays above it at
	// every heartbeat for 5 s (guard.MemorySustain: a spike falls back
	// within that, a leak does not) is recycled new-before-old, without
	// loss (EventMemory). Linux only (RSS from /proc). 0 means off;
	// negative is an error.
	MemoryLimit int64
	// DrainDelay, if positive, is the lame-duck period of a graceful stop of
	// the whole pool (TERM, QUIT, the context, flockctl stop): for this
	// long the workers keep accepting and serving, with [Draining] true in
	// handlers and Connection: close on responses (keep-alive off), so that
	// a readiness probe can fail and load balancers remove the endpoint
	// before anything stops accepting. Then the stop proceeds as without
	// it. SIGINT during the delay stops at once. Retirements, restarts and
	// upgrades do not wait. 0 means off; negative is an error.
	DrainDelay time.Duration
	// Metrics, if set, serves one /metrics for the whole pool from the
	// supervisor: &metrics.Exporter{Addr: "127.0.0.1:9100"} (package
	// github.com/clusterflock/clusterflock/metrics, which a program that
	// leaves this unset does not link). A bad or taken address is an error
	// at start, before any worker is forked.
	Metrics MetricsExporter
	// KeepSysmonAwake runs every worker with GODEBUG=schedtrace=2147483647
	// (added to any GODEBUG the environment sets, unless it already sets
	// schedtrace), which keeps the Go runtime's sysmon thread out of its
	// deep sleep. A worker that carries part of the load goes idle between
	// requests far more often than one process carrying all of it; each
	// time it wakes, sysmon is woken by the first syscall and polls every
	// 20 µs, taking CPU from the other workers and the clients
	// (bench/SYSMON.md has the measurements and a reproduction). The
	// costs: sysmon wakes every 10 ms in an idle worker (100 wake-ups a
	// second, 0.3 % of a core on a 2-vCPU VM, against 0.02 %); the
	// runtime prints one SCHED line to stderr every 24.8 days (at start on
	// a host up longer than that) and, when a worker dies of a fatal panic
	// or runtime error, a detailed scheduler dump (a line per goroutine)
	// before the panic's own text; and programs a worker starts inherit the
	// setting with the environment, as they inherit GOMAXPROCS. A
	// workaround for the runtime's behaviour (golang/go#18236), off by
	// default.
	KeepSysmonAwake bool
	// Migration chooses how connections queued on a retiring worker's
	// listener reach the others instead of being reset. "" (MigrationAuto)
	// picks the best available and logs it at start; naming one that this
	// machine cannot offer is an error.
	Migration Migration
}

// MetricsExporter is the type of Options.Metrics: *metrics.Exporter is
// the implementation (its methods are the pool's, not the program's).
type MetricsExporter interface {
	plug.Exporter
}

// Migration names a mechanism that moves connections queued on a closing
// listener to the pool's other listeners.
type Migration string

// Migration mechanisms.
const (
	// MigrationAuto picks MigrationEBPF when the process may load BPF
	// programs (root or CAP_BPF), else MigrationSysctl when the operator set
	// net.ipv4.tcp_migrate_req=1, else MigrationCBPF (no privilege needed),
	// and MigrationNone only if the kernel refuses classic BPF steering.
	MigrationAuto Migration = ""
	// MigrationEBPF attaches a reuseport BPF program that keeps the kernel's
	// hash balancing and migrates queued connections. No host-wide change.
	MigrationEBPF Migration = "ebpf"
	// MigrationSysctl relies on net.ipv4.tcp_migrate_req=1 (read, never set).
	MigrationSysctl Migration = "sysctl"
	// MigrationCBPF needs no privilege and loses nothing: the supervisor
	// opens and holds one SO_REUSEPORT listening socket per worker slot and
	// each worker accepts on its slot's socket, so the kernel still balances
	// connections over per-worker sockets. Connections queued on a slot's
	// socket wait for the slot's next worker instead of being reset (a
	// crashed worker loses only what it had accepted), and an unprivileged
	// classic BPF program (SO_ATTACH_REUSEPORT_CBPF) steers new connections
	// only to slots with a ready worker, so a slot that leaves the pool
	// (TTOU) is drained before its socket closes. A binary upgrade hands the
	// sockets to the new supervisor, which keeps the pool's current size if
	// that exceeds its Options.Workers.
	MigrationCBPF Migration = "cbpf"
	// MigrationNone migrates nothing: under load a retiring worker may lose
	// the few connections still queued in its listener when it closes.
	MigrationNone Migration = "none"
	// MigrationShared needs no privilege and loses nothing: the supervisor
	// opens one listening socket and every worker accepts from it, so no
	// connection is ever queued on a retiring worker's own socket. The
	// price is balancing: instead of the kernel's per-connection hash, the
	// worker that accepts first gets the connection. Never chosen by
	// MigrationAuto on Linux; it is what socket activation and non-Linux
	// systems use.
	MigrationShared Migration = "shared"
)

// ErrInterrupted is returned by [Run] in the supervisor when SIGINT stopped
// the pool: every worker was killed at once, without a graceful drain.
var ErrInterrupted = errors.New("clusterflock: interrupted by SIGINT: workers killed at once")

// Run serves h from a pool of worker processes until ctx is done or a
// shutdown signal arrives. In the first process it is the supervisor; in each
// re-executed worker it serves h on the worker's own SO_REUSEPORT listener.
//
// Every worker is this program re-executed with the same arguments and
// environment, so code before Run runs in the supervisor and in every
// worker, and code after Run runs when a worker's Run returns (after it
// stopped serving). Use [IsWorker] to tell the two apart. In a worker, a ctx
// ended by a signal (signal.NotifyContext seeing a signal sent to the whole
// process group) does not stop it: the supervisor decides.
//
// In the supervisor, cancelling ctx stops the pool gracefully (after
// Options.DrainDelay); SIGINT stops it at once unless ctx ends because of
// that SIGINT (signal.NotifyContext with os.Interrupt), which is graceful. Run returns
// nil after a graceful stop in which every worker finished in time, and an
// error prefixed "clusterflock:" otherwise: bad options (before anything is
// started), workers that cannot start, workers killed at the shutdown
// timeout, or [ErrInterrupted].
func Run(ctx context.Context, h http.Handler, opts Options) error {
	if h == nil {
		return errors.New("clusterflock: handler is nil")
	}
	if err := checkServerTemplate(opts.Server); err != nil {
		return err
	}
	o, err := opts.withDefaults(os.Getenv)
	if err != nil {
		return err
	}
	reqs := newRequests(o)
	return run(ctx, func(m plug.Worker) ServeFunc { return httpServe(h, o, reqs, m) }, o, reqs)
}

// ServeFunc serves connections from ln until ctx is done, then stops
// gracefully: it stops accepting, finishes the work in flight and returns
// nil. (The worker closes ln just after ctx is done, too.) Returning before
// ctx is done counts as the worker failing. ctx carries the [WorkerInfo].
// ln is the worker's TCP listener behind a wrapper (its Close tells the
// supervisor the socket is closed), so it is not a *net.TCPListener; its
// SyscallConn and File reach the socket.
type ServeFunc func(ctx context.Context, ln net.Listener) error

// Serve is [Run] for any server that serves on a net.Listener: gRPC, a raw
// TCP protocol, another HTTP stack. In each worker it calls serve with the
// worker's own listener; everything else (signals, re-forks, restarts,
// upgrades) is as for Run. Options.Server and Options.MaxRequests, which
// are about HTTP, must be unset.
func Serve(ctx context.Context, serve ServeFunc, opts Options) error {
	if serve == nil {
		return errors.New("clusterflock: serve function is nil")
	}
	if opts.Server != nil {
		return errors.New("clusterflock: Options.Server applies to Run only; configure your own server in the serve function")
	}
	if opts.MaxRequests != 0 || opts.MaxRequestsJitter != 0 {
		return errors.New("clusterflock: Options.MaxRequests counts HTTP requests and applies to Run only")
	}
	if opts.StuckTimeout != 0 {
		return errors.New("clusterflock: Options.StuckTimeout watches HTTP requests and applies to Run only")
	}
	o, err := opts.withDefaults(os.Getenv)
	if err != nil {
		return err
	}
	return run(ctx, func(plug.Worker) ServeFunc { return serve }, o, nil)
}

// IsWorker reports whether this process is a clusterflock worker started by
// its parent. It is true only until the worker's Run starts, which removes
// the marker from the environment so the handler's subprocesses do not
// inherit it.
func IsWorker() bool {
	_, ok, err := proto.LookupWorker()
	return ok && err == nil
}

// options are Options with defaults applied and validated. Workers stays 0
// for "one per CPU": only the supervisor counts the CPUs (supervisorConfig),
// so that a worker, which is told its GOMAXPROCS, does not read the cgroup
// files at every start.
type options struct {
	Options
}

// timing returns the deadlines that follow from o's timeouts.
func (o options) timing() proto.Timing { return proto.NewTiming(o.ShutdownTimeout, o.HeartbeatTimeout) }

// withDefaults validates o and applies defaults; getenv reads $PORT.
func (o Options) withDefaults(getenv func(string) string) (options, error) {
	if err := o.check(); err != nil {
		return options{}, err
	}
	r := options{Options: o}
	if r.ShutdownTimeout == 0 {
		r.ShutdownTimeout = time.Second
	}
	if r.HeartbeatTimeout == 0 {
		r.HeartbeatTimeout = 10 * time.Second
	}
	if r.RestartSurge == 0 {
		r.RestartSurge = 1
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if r.Addr == "" {
		port := getenv("PORT")
		if port == "" {
			port = "5000"
		}
		if err := checkPort(port); err != nil {
			return options{}, fmt.Errorf("clusterflock: environment variable PORT=%q: %v", port, err)
		}
		r.Addr = ":" + port
	}
	_, port, err := net.SplitHostPort(r.Addr)
	if err != nil {
		return options{}, fmt.Errorf("clusterflock: Options.Addr %q: %v", o.Addr, err)
	}
	if err := checkPort(port); err != nil {
		return options{}, fmt.Errorf("clusterflock: Options.Addr %q: %v", o.Addr, err)
	}
	return r, nil
}

// check reports the first field of o that is out of range.
func (o Options) check() error {
	if o.Workers < 0 {
		return fmt.Errorf("clusterflock: Options.Workers is %d; want 0 (one per CPU) or more", o.Workers)
	}
	if o.ShutdownTimeout < 0 {
		return fmt.Errorf("clusterflock: Options.ShutdownTimeout is %v; want 0 (1s) or more", o.ShutdownTimeout)
	}
	for _, f := range []struct {
		name, want string
		v          int64
	}{
		{"GOMAXPROCS", "0 (automatic) or more", int64(o.GOMAXPROCS)},
		{"MaxRequests", "0 (never) or more", int64(o.MaxRequests)},
		{"MaxRequestsJitter", "0 or more", int64(o.MaxRequestsJitter)},
		{"RestartSurge", "0 (one) or more", int64(o.RestartSurge)},
	} {
		if f.v < 0 {
			return fmt.Errorf("clusterflock: Options.%s is %d; want %s", f.name, f.v, f.want)
		}
	}
	if o.HeartbeatTimeout < 0 {
		return fmt.Errorf("clusterflock: Options.HeartbeatTimeout is %v; want 0 (10s) or more", o.HeartbeatTimeout)
	}
	if o.DrainDelay < 0 {
		return fmt.Errorf("clusterflock: Options.DrainDelay is %v; want 0 (off) or more", o.DrainDelay)
	}
	if o.StuckTimeout < 0 {
		return fmt.Errorf("clusterflock: Options.StuckTimeout is %v; want 0 (off) or more", o.StuckTimeout)
	}
	if o.MemoryLimit < 0 {
		return fmt.Errorf("clusterflock: Options.MemoryLimit is %d; want 0 (off) or a number of bytes", o.MemoryLimit)
	}
	switch o.Migration {
	case MigrationAuto, MigrationEBPF, MigrationSysctl, MigrationCBPF, MigrationNone, MigrationShared:
	default:
		return fmt.Errorf("clusterflock: Options.Migration is %q; want \"\", %q, %q, %q, %q or %q",
			o.Migration, MigrationEBPF, MigrationSysctl, MigrationCBPF, MigrationShared, MigrationNone)
	}
	return nil
}

func checkPort(port string) error {
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// WorkerInfo identifies the worker a piece of code runs in.
type WorkerInfo struct {
	Slot          int // position in the pool, 0 … Workers-1; kept by a replacement
	Generation    int // 0, then +1 per rolling restart
	PID           int // this worker's process ID
	SupervisorPID int
}

type workerKey struct{}

// Draining reports whether the worker serving ctx (a request's context in
// a handler given to [Run], or a [ServeFunc]'s) is draining: in the pool's
// lame-duck period (Options.DrainDelay), or stopping (retired, replaced by
// a rolling restart or a guard, recycled, or the pool stopping). Either
// way it will stop soon, so a readiness probe should fail. It reports
// false outside a worker, or when a Server.BaseContext of the program's
// own replaced the worker's context.
func Draining(ctx context.Context) bool {
	d, ok := ctx.Value(lameDuckKey{}).(*lameDuck)
	return ok && d.isDraining()
}

// DrainStarted returns a channel that is closed when the worker serving
// ctx starts to drain (see [Draining]): the moment for handlers of
// long-lived connections to end them cleanly. A websocket handler selects
// on it and sends a close message; a server-sent-events stream ends its
// response. A draining worker answers requests on open connections with
// Connection: close, and waits for hijacked connections until their
// handlers close them, or ShutdownTimeout ends. Outside a worker (or when
// a Server.BaseContext of the program's own replaced the worker's
// context) it returns nil, which blocks forever in a select.
func DrainStarted(ctx context.Context) <-chan struct{} {
	d, ok := ctx.Value(lameDuckKey{}).(*lameDuck)
	if !ok {
		return nil
	}
	return d.started
}

type lameDuckKey struct{}

// lameDuck is a worker's knowledge of its drain: the pool's lame-duck
// period, or its own stop.
type lameDuck struct {
	started chan struct{} // closed when the drain begins
	once    sync.Once
	mu      sync.Mutex
	servers []*connTracker // keep-alive goes off in each when it begins
}

func newLameDuck() *lameDuck { return &lameDuck{started: make(chan struct{})} }

// begin is called when the supervisor says the lame-duck period has begun:
// responses say Connection: close from now on (idle connections stay open
// for their clients' next requests).
func (d *lameDuck) begin() {
	d.drainStarts()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.servers {
		s.closeKeepAlives()
	}
}

// drainStarts marks the drain begun (lame duck or stop), once.
func (d *lameDuck) drainStarts() { d.once.Do(func() { close(d.started) }) }

// isDraining reports whether the drain has begun.
func (d *lameDuck) isDraining() bool {
	select {
	case <-d.started:
		return true
	default:
		return false
	}
}

// serving registers a server's connections, whose keep-alive goes off when
// the lame-duck period begins.
func (d *lameDuck) serving(c *connTracker) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.servers = append(d.servers, c)
	if d.isDraining() {
		c.closeKeepAlives()
	}
}

// WorkerFromContext returns the worker serving ctx: a request's context in a
// handler given to [Run], or the context given to a [ServeFunc]. It reports
// false outside a worker.
func WorkerFromContext(ctx context.Context) (WorkerInfo, bool) {
	w, ok := ctx.Value(workerKey{}).(WorkerInfo)
	return w, ok
}
