//go:build unix

// Package supervisorproc is the supervisor process's side of a clusterflock
// pool: what runs in the first process. It chooses and holds the pool's
// listeners (one implementation per migration mode, see listeners), starts
// workers by re-executing the program (spawner, with a standby for
// Options.Spare), drives package supervisor through its hooks, turns signals
// into pool actions (dispatcher), performs binary upgrades (upgrade.go for
// the old supervisor, heir.go for the new one), tells systemd what the pool
// does, and reaps orphans as PID 1.
package supervisorproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterflock/clusterflock/control"
	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sdnotify"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
)

// Config is what the supervisor needs of the pool's options (with defaults
// applied).
type Config struct {
	Workers          int
	Addr             string
	Migration        sockets.Migration
	Timing           proto.Timing
	HeartbeatTimeout time.Duration
	GOMAXPROCS       int
	RestartSurge     int
	Spare            bool
	Logger           *slog.Logger
	OnEvent          func(supervisor.Event)
	ControlSocket    string        // Options.ControlSocket
	Metrics          plug.Exporter // Options.Metrics, or nil
	MemoryLimit      int64         // Options.MemoryLimit: each worker's GOMEMLIMIT, unless the environment sets one
	KeepSysmonAwake  bool          // Options.KeepSysmonAwake: workers run with GODEBUG schedtrace set
	DrainDelay       time.Duration // Options.DrainDelay: the lame-duck period of a graceful stop
	CPUs             int           // the CPUs this process may use (affinity, cgroup quota); 0: runtime.NumCPU()
	CPUsSource       string        // where CPUs came from, for the start log
	// WorkersFrom is where Workers came from, for the start log:
	// WorkersFromOptions or WorkersFromCPUs ("": options); Run sets
	// WorkersFromUpgrade when a binary upgrade's old pool sizes this one.
	WorkersFrom string
}

// Where a pool's size comes from (Config.WorkersFrom, the start log's
// workers_from).
const (
	WorkersFromOptions = "options" // Options.Workers
	WorkersFromCPUs    = "cpus"    // Options.Workers 0: the CPUs this process may use
	WorkersFromUpgrade = "upgrade" // the old pool's size, as scaled, handed over by a binary upgrade
)

// poolSize returns the number of workers to start and where it comes from.
// A binary upgrade's new supervisor starts the old pool's size, as TTIN,
// TTOU or a scale left it, in every migration mode, whatever its own
// Options.Workers. From an older build, which does not say its size, a
// steered group's sockets (one per slot, each needing a worker) count if
// they are more than Options.Workers.
func poolSize(cfg Config, lis listeners, h *heir) (int, string) {
	n, from := cfg.Workers, cfg.WorkersFrom
	if from == "" {
		from = WorkersFromOptions
	}
	if h != nil && h.workers > 0 {
		n, from = h.workers, WorkersFromUpgrade
	}
	if st, ok := lis.(*steered); ok && h != nil && st.g.Len() > n {
		n, from = st.g.Len(), WorkersFromUpgrade
	}
	return n, from
}

// Notify subscribes a buffered channel to the signals a supervisor acts
// on; Run stops it.
func Notify() chan os.Signal {
	c := make(chan os.Signal, 16)
	signal.Notify(c, proto.Signals()...)
	return c
}

// Run runs the supervisor role until the pool has stopped. Signals arrive
// on sigs (tests feed it directly); Run stops them on return. It returns
// supervisor.ErrKilled after an immediate stop.
func Run(ctx context.Context, cfg Config, sigs chan os.Signal) error {
	defer signal.Stop(sigs)
	closeStrayOnExec()
	h := takeHeir(cfg.Logger)
	if h != nil {
		cfg.Addr = h.env.Addr // the concrete address, even for port 0
	}
	err := run(ctx, cfg, sigs, h)
	if err != nil {
		h.fail(err)
	}
	return err
}

func run(ctx context.Context, cfg Config, sigs chan os.Signal, h *heir) error {
	lis, c, err := openListeners(cfg, h)
	if err != nil {
		return err
	}
	defer lis.Close()
	optionsWorkers := cfg.Workers
	cfg.Workers, cfg.WorkersFrom = poolSize(cfg, lis, h)
	var current atomic.Pointer[supervisor.Supervisor]
	lameDuck := &atomic.Bool{}
	mx, err := startMetrics(cfg, lis, h, &current)
	if err != nil {
		return err
	}
	own := &children{}
	sp, err := newSpawner(cfg, lis, own, mx)
	if err != nil {
		closeMetrics(mx, nil, cfg.Logger)
		return err
	}
	defer sp.Close()
	sd := &systemd{n: sdnotify.FromEnv(), log: cfg.Logger, addr: lis.addr()}
	ctlPath := controlPath(cfg.ControlSocket, lis.addr())
	ctl, ctlAttrs := startControl(ctlPath, h != nil, cfg.Logger)
	onEvent := withMetrics(mx, ctl.follow(cfg.OnEvent, lis))
	sup, err := supervisor.New(supervisor.Config{
		Spawner:          sp,
		Workers:          cfg.Workers,
		StopTimeout:      cfg.Timing.Shutdown,
		HeartbeatTimeout: cfg.HeartbeatTimeout,
		Surge:            cfg.RestartSurge,
		Logger:           cfg.Logger,
		OnEvent:          onEvent,
		Hooks:            &hooks{lis: lis, heir: h, sd: sd, ctl: ctl, ctlPath: ctlPath, lameDuck: lameDuck},
	})
	if err != nil {
		if ctl != nil {
			ctl.Close()
		}
		closeMetrics(mx, nil, cfg.Logger)
		return fmt.Errorf("clusterflock: %w", err)
	}
	current.Store(sup)
	logStart(cfg, lis, c, h, optionsWorkers, ctlAttrs)
	d := &dispatcher{cfg: cfg, sup: sup, lis: lis, sd: sd, own: own, upgrades: make(chan upgradeResult, 1),
		calls: make(chan call), startSuccessor: startSuccessor, ctx: ctx, ctxDone: ctx.Done(), lameDuck: lameDuck}
	err = serve(ctx, sup, d, ctl, sigs)
	closeMetrics(mx, d.handover, cfg.Logger)
	return err
}

// serve runs the pool with its dispatcher, control socket and (as PID 1)
// reaper until it has stopped, and joins them.
func serve(ctx context.Context, sup *supervisor.Supervisor, d *dispatcher, ctl *controlServer, sigs chan os.Signal) error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { d.run(sigs, stop) })
	if ctl != nil {
		ctl.d = d
		wg.Go(ctl.serve)
	}
	if os.Getpid() == 1 {
		d.cfg.Logger.Info("running as PID 1: reaping orphaned processes")
		wg.Go(func() { reapOrphans(d.own, stop) })
	}
	// The dispatcher stops the pool when ctx ends (after DrainDelay, and
	// reconciled with SIGINT: see stopping.go).
	err := result(sup.Run(context.WithoutCancel(ctx)), d.cfg.Logger, d.lis.addr())
	if ctl != nil {
		ctl.finish(err) // a stop asked on the control socket hears the result
	}
	close(stop)
	if ctl != nil {
		ctl.Close()
	}
	wg.Wait()
	return err
}

// startMetrics starts Options.Metrics' supervisor side, or returns nil
// without it. A heir of a binary upgrade takes the old supervisor's
// hand-over channel.
func startMetrics(cfg Config, lis listeners, h *heir, sup *atomic.Pointer[supervisor.Supervisor]) (plug.Supervisor, error) {
	if cfg.Metrics == nil {
		h.closeHandover()
		return nil, nil
	}
	mx, err := cfg.Metrics.Supervisor(plug.SupervisorConfig{
		Logger:   cfg.Logger,
		Handover: h.takeHandover(),
		Pool: func() supervisor.Snapshot {
			if s := sup.Load(); s != nil {
				return s.Snapshot()
			}
			return supervisor.Snapshot{}
		},
		Queues: func() ([]plug.Queue, error) { return queues(lis.addr()) },
	})
	if err != nil {
		return nil, err
	}
	return mx, nil
}

// withMetrics returns next with the metrics' counting of events first.
func withMetrics(mx plug.Supervisor, next func(supervisor.Event)) func(supervisor.Event) {
	if mx == nil {
		return next
	}
	return func(ev supervisor.Event) {
		mx.Event(ev)
		if next != nil {
			next(ev)
		}
	}
}

// closeMetrics stops the metrics, handing their totals over on handover
// (a done binary upgrade's channel) if not nil.
func closeMetrics(mx plug.Supervisor, handover *os.File, log *slog.Logger) {
	switch {
	case mx == nil:
		if handover != nil {
			handover.Close()
		}
	case handover != nil:
		if err := mx.HandOver(handover); err != nil {
			log.Warn("metrics: the hand-over to the new supervisor failed; its counters start again", "err", err.Error())
		}
	default:
		mx.Close()
	}
}

// follow returns the supervisor's OnEvent: the control socket's event bus,
// then the user's hook.
func (ctl *controlServer) follow(user func(supervisor.Event), lis listeners) func(supervisor.Event) {
	if ctl == nil {
		return user
	}
	ctl.info = func() control.Status {
		return control.Status{PID: os.Getpid(), Addr: lis.addr(), Migration: string(lis.migration())}
	}
	return func(ev supervisor.Event) {
		ctl.bus.publish(ev)
		if user != nil {
			user(ev)
		}
	}
}

// startControl opens the control socket at path ("" none), or logs why it
// cannot, as an error, and returns nil: the pool runs without one. The
// attributes are for the start line: the socket's path, or why there is
// none.
func startControl(path string, heir bool, log *slog.Logger) (*controlServer, []any) {
	if path == "" {
		return nil, []any{"control_socket", ""}
	}
	ctl, err := openControl(path, heir, log)
	if err != nil {
		log.Error("no control socket: flockctl cannot reach this pool; the pool runs without one",
			"path", path, "err", err.Error())
		return nil, []any{"control_socket", "", "control_socket_error", err.Error()}
	}
	log.Info("control socket", "path", path)
	return ctl, []any{"control_socket", path}
}

// logStart logs the start line (with optionsWorkers, Options.Workers, if a
// binary upgrade's old pool sized this one otherwise, and ctl, the control
// socket's attributes), and a warning if nothing migrates.
func logStart(cfg Config, lis listeners, c choice, h *heir, optionsWorkers int, ctl []any) {
	mig := lis.migration()
	start := []any{"pid", os.Getpid(), "addr", lis.addr(), "workers", cfg.Workers, "workers_from", cfg.WorkersFrom, "migration", string(mig)}
	if cfg.WorkersFrom == WorkersFromUpgrade && cfg.Workers != optionsWorkers {
		start = append(start, "options_workers", optionsWorkers)
	}
	start = append(start, ctl...)
	if cfg.CPUs > 0 {
		start = append(start, "cpus", cfg.CPUs, "cpus_from", cfg.CPUsSource)
	}
	if c.why != "" { // why a better mechanism is not in force
		start = append(start, "migration_reason", c.why)
	}
	if h != nil {
		start = append(start, "upgrade_from", h.env.OldPID)
	}
	cfg.Logger.Info("supervisor starting", start...)
	if exe, err := os.Executable(); err == nil && inBuildCache(exe) {
		cfg.Logger.Warn("this program runs from a Go build cache directory (go run?): HUP and USR2 re-execute the binary on disk, "+
			"which go run deletes when it exits; go build it to use them", "path", exe)
	}
	if mig == sockets.MigrationNone {
		ways := `run with CAP_BPF, set net.ipv4.tcp_migrate_req=1, or use Options.Migration "cbpf" or "shared"`
		if c.noCBPF {
			ways = `run with CAP_BPF, set net.ipv4.tcp_migrate_req=1, or use Options.Migration "shared"`
		}
		cfg.Logger.Warn("no connection migration: a retiring worker may reset connections still queued on its listener; "+ways, "reason", c.why)
	}
}

// inBuildCache reports whether exe is where go run builds: a go-build
// directory under the temporary directory ($TMPDIR/go-build…/b001/exe/).
// The pattern is compiled here, once per supervisor, not at package init,
// which every worker's start would pay for.
func inBuildCache(exe string) bool {
	goRunDir := regexp.MustCompile(`/go-build[0-9]+/b[0-9]+/exe$`)
	return goRunDir.MatchString(filepath.ToSlash(filepath.Dir(exe)))
}

// result maps the supervisor's result to the one Run returns.
func result(err error, log *slog.Logger, addr string) error {
	var se *supervisor.StartError
	var te *supervisor.StopTimeoutError
	switch {
	case err == nil:
		log.Info("supervisor stopped", "pid", os.Getpid())
		return nil
	case errors.Is(err, supervisor.ErrKilled):
		return err
	case errors.As(err, &se):
		return fmt.Errorf("clusterflock: workers cannot serve on %s: %w", addr, err)
	case errors.As(err, &te):
		return fmt.Errorf("clusterflock: ShutdownTimeout exceeded: %w", err)
	}
	return fmt.Errorf("clusterflock: %w", err)
}
