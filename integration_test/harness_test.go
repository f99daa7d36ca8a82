//go:build linux

// Package integration_test runs clusterflock pools as real processes: the test
// binary is both the supervisor and its workers (TestMain dispatches on
// CF_HELPER), signals are real signals and requests go over real sockets on
// 127.0.0.1. Every test waits on lifecycle events (each Options.OnEvent call
// of a supervisor is a record of its log), other log lines or answers with
// deadlines, never on fixed sleeps, and kills and reaps the process group it
// started.
package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock"
	"github.com/clusterflock/clusterflock/examples/tcp/echo"
	"github.com/clusterflock/clusterflock/metrics"
	"github.com/clusterflock/clusterflock/supervisor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Environment of a helper process (the supervisor and, inherited, its workers).
const (
	envHelper      = "CF_HELPER"       // mode: "pool", "exit-before-ready", "tls", "h2c", "tcp"
	envAddr        = "CF_ADDR"         // Options.Addr
	envWorkers     = "CF_WORKERS"      // Options.Workers
	envShutdown    = "CF_SHUTDOWN"     // Options.ShutdownTimeout
	envMigration   = "CF_MIGRATION"    // Options.Migration
	envHeartbeat   = "CF_HEARTBEAT"    // Options.HeartbeatTimeout
	envMaxRequests = "CF_MAX_REQUESTS" // Options.MaxRequests
	envSurge       = "CF_SURGE"        // Options.RestartSurge
	// envFailUpgrade makes a new supervisor started by a binary upgrade
	// (CLUSTERFLOCK_UPGRADE in its environment) exit 1 before Run.
	envFailUpgrade = "CF_FAIL_UPGRADE"
	// envHoldUpgrade makes a new supervisor started by a binary upgrade log
	// "new supervisor holding" and wait (at most 20 s) until the file it
	// names exists before it runs.
	envHoldUpgrade = "CF_HOLD_UPGRADE"
	// envUpgradeMigration is Options.Migration of a new supervisor started
	// by a binary upgrade ("auto" for ""), instead of envMigration.
	envUpgradeMigration = "CF_UPGRADE_MIGRATION"
	envSpare            = "CF_SPARE"   // Options.Spare
	envControl          = "CF_CONTROL" // Options.ControlSocket
	// envFailGeneration makes workers of this generation or later write a
	// line on stderr and exit 1 before Run (a rolling restart's new
	// build that cannot start).
	envFailGeneration = "CF_FAIL_GENERATION"
	// envMetrics is Options.Metrics' Addr: the helper then counts each
	// request to /count in its own counter app_hits_total.
	envMetrics = "CF_METRICS"
	envStuck   = "CF_STUCK"    // Options.StuckTimeout
	envMemory  = "CF_MEMLIMIT" // Options.MemoryLimit, bytes
	// envWedge makes every request of a worker take a read lock that
	// /wedge, once requested there, holds forever (a global lock, wedged).
	envWedge  = "CF_WEDGE"
	envDrain  = "CF_DRAIN"  // Options.DrainDelay
	envSysmon = "CF_SYSMON" // Options.KeepSysmonAwake
	// envNotifyContext makes the helper's context the usual Go idiom:
	// signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM).
	envNotifyContext = "CF_NOTIFY_CONTEXT"
)

// eventMsg is the msg of the record a helper logs for each Options.OnEvent
// call (see helper and event).
const eventMsg = "on-event"

// envUpgrade is the library's marker of a new supervisor (internal/proto).
const envUpgrade = "CLUSTERFLOCK_UPGRADE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envHelper); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

// helper is main() of the program under test.
func helper(mode string) int {
	if mode == "exit-before-ready" && clusterflock.IsWorker() {
		fmt.Fprintln(os.Stderr, `{"msg":"worker dies at start"}`)
		return 3
	}
	if g, err := strconv.Atoi(os.Getenv(envFailGeneration)); err == nil && clusterflock.IsWorker() {
		// CLUSTERFLOCK_WORKER is <supervisor>:<slot>:<generation>:…
		f := strings.Split(os.Getenv("CLUSTERFLOCK_WORKER"), ":")
		if gen, err := strconv.Atoi(f[min(2, len(f)-1)]); err == nil && gen >= g {
			fmt.Fprintln(os.Stderr, "cannot open the database: connection refused")
			return 1
		}
	}
	if os.Getenv(envFailUpgrade) != "" && os.Getenv(envUpgrade) != "" {
		fmt.Fprintf(os.Stderr, `{"msg":"new supervisor fails before Run","pid":%d}`+"\n", os.Getpid())
		return 1
	}
	if hold := os.Getenv(envHoldUpgrade); hold != "" && os.Getenv(envUpgrade) != "" {
		fmt.Fprintf(os.Stderr, `{"msg":"new supervisor holding","pid":%d}`+"\n", os.Getpid())
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			if _, err := os.Stat(hold); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
		}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := clusterflock.Options{
		Addr:      os.Getenv(envAddr),
		Logger:    logger,
		Migration: clusterflock.Migration(os.Getenv(envMigration)),
	}
	if m, ok := os.LookupEnv(envUpgradeMigration); ok && os.Getenv(envUpgrade) != "" {
		opts.Migration = clusterflock.Migration(strings.TrimPrefix(m, "auto"))
	}
	for _, f := range []struct {
		env string
		n   *int
	}{{envWorkers, &opts.Workers}, {envMaxRequests, &opts.MaxRequests}, {envSurge, &opts.RestartSurge}} {
		if v := os.Getenv(f.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				panic(err)
			}
			*f.n = n
		}
	}
	for _, f := range []struct {
		env string
		d   *time.Duration
	}{{envShutdown, &opts.ShutdownTimeout}, {envHeartbeat, &opts.HeartbeatTimeout}, {envStuck, &opts.StuckTimeout}, {envDrain, &opts.DrainDelay}} {
		if v := os.Getenv(f.env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				panic(err)
			}
			*f.d = d
		}
	}
	if v := os.Getenv(envMemory); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			panic(err)
		}
		opts.MemoryLimit = n
	}
	opts.Spare = os.Getenv(envSpare) != ""
	opts.KeepSysmonAwake = os.Getenv(envSysmon) != ""
	opts.ControlSocket = os.Getenv(envControl)
	opts.OnEvent = logEvent(logger)
	hits := helperMetrics(&opts)
	worker := clusterflock.IsWorker()
	ctx := context.Background()
	if os.Getenv(envNotifyContext) != "" {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	if mode == "h2c" {
		opts.Server = &http.Server{Protocols: h2cProtocols()}
	}
	var err error
	switch mode {
	case "upload":
		err = clusterflock.Run(ctx, uploadHandler(), opts)
	case "tcp":
		err = clusterflock.Serve(ctx, echo.Serve, opts)
	case "tls":
		opts.Server = &http.Server{TLSConfig: selfSignedTLS()}
		fallthrough
	default:
		h := testHandler(hits)
		if os.Getenv(envWedge) != "" {
			h = wedgeable(h)
		}
		err = clusterflock.Run(ctx, h, opts)
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	logger.Info("run returned", "err", msg, "worker", worker, "pid", os.Getpid())
	if err != nil {
		return 1
	}
	return 0
}

// logEvent returns the helper's Options.OnEvent: it logs every field of each
// event as a record with msg eventMsg, with the pid of the supervisor that
// reports it (a binary upgrade's new supervisor writes to the same stderr).
// Its attributes are the names record.event reads.
func logEvent(logger *slog.Logger) func(supervisor.Event) {
	self := os.Getpid()
	return func(ev supervisor.Event) {
		status := ""
		if ev.Kind == supervisor.EventExit {
			status = ev.Exit.String()
		}
		var uptime time.Duration
		if !ev.Worker.Started.IsZero() {
			uptime = time.Since(ev.Worker.Started)
		}
		logger.Info(eventMsg, "kind", string(ev.Kind), "supervisor", self,
			"worker", ev.Worker.ID, "slot", ev.Worker.Slot, "generation", ev.Worker.Generation, "pid", ev.Worker.Pid,
			"state", string(ev.Worker.State), "started", ev.Worker.Started, "uptime", uptime,
			"status", status, "stderr", ev.Exit.Stderr, "delay", ev.Delay, "reason", ev.Reason, "pool", ev.Pool, "new_pid", ev.Pid)
	}
}

// helperMetrics sets Options.Metrics if envMetrics asks for it, with a
// registry holding the Go collector and app_hits_total, which the
// returned function counts (nil without metrics).
func helperMetrics(opts *clusterflock.Options) func() {
	addr := os.Getenv(envMetrics)
	if addr == "" {
		return nil
	}
	hits := prometheus.NewCounter(prometheus.CounterOpts{Name: "app_hits_total", Help: "Requests to /count."})
	reg := prometheus.NewRegistry()
	reg.MustRegister(hits, collectors.NewGoCollector())
	e := &metrics.Exporter{Addr: addr, Gatherer: reg, PerSlot: []string{"go_goroutines"}}
	mintSeries(reg, e)
	opts.Metrics = e
	return hits.Inc
}

// wedgeable makes every request take a read lock of one lock, which a
// request to /wedge takes for writing twice: that request, and every one
// after it in this worker, blocks for ever (see envWedge).
func wedgeable(h http.Handler) http.Handler {
	var mu sync.RWMutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wedge" {
			wedgeForever(&mu)
			return
		}
		mu.RLock()
		defer mu.RUnlock()
		h.ServeHTTP(w, r)
	})
}

// wedgeForever deadlocks on mu: the function a stuck report must name.
//
//go:noinline
func wedgeForever(mu *sync.RWMutex) {
	mu.Lock()
	mu.Lock()
}

func testHandler(hits func()) http.Handler {
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	var leakMu sync.Mutex
	var leaked [][]byte
	// /leak?mb=N keeps N MiB, touched, for the worker's life.
	mux.HandleFunc("/leak", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		b := make([]byte, mb<<20)
		for i := range b {
			if i%4096 == 0 {
				b[i] = 1
			}
		}
		leakMu.Lock()
		leaked = append(leaked, b)
		leakMu.Unlock()
		io.WriteString(w, pid)
	})
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits()
		}
		io.WriteString(w, pid)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		io.WriteString(w, pid)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		fmt.Fprintf(os.Stderr, `{"msg":"slow request started","pid":%s}`+"\n", pid)
		time.Sleep(time.Duration(ms) * time.Millisecond)
		w.Header().Set("X-Pid", pid)
		io.WriteString(w, pid)
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, os.Getenv("CLUSTERFLOCK_WORKER"))
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		os.Exit(3)
	})
	mux.HandleFunc("/getenv", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, os.Getenv(r.URL.Query().Get("k")))
	})
	mux.HandleFunc("/draining", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, clusterflock.Draining(r.Context()), " ", pid)
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		wk, ok := clusterflock.WorkerFromContext(r.Context())
		fmt.Fprintf(w, "%t %d %d %d", ok, wk.Slot, wk.Generation, wk.PID)
	})
	// /stray writes what= on the worker's status pipe (fd 3), as a buggy
	// or hostile worker could: "standby2" (two standby lines), "garbage",
	// "huge" (a line over 64 KiB) or "flood" (100,000 heartbeats).
	mux.HandleFunc("/stray", func(w http.ResponseWriter, r *http.Request) {
		b := map[string]string{
			"standby2": "standby\nstandby\n",
			"garbage":  "\x00\x01\xfe GET / HTTP/1.1\n",
			"huge":     strings.Repeat("x", 70<<10) + "\n",
			"flood":    strings.Repeat("heartbeat\n", 100000),
		}[r.URL.Query().Get("what")]
		go syscall.Write(3, []byte(b)) // a pipe write may block once the supervisor stops reading
		io.WriteString(w, pid)
	})
	// /orphan starts a shell that leaves a background sleep behind and
	// exits: the sleep is orphaned and re-parented (to PID 1 of its
	// namespace). It answers the shell's exit status.
	mux.HandleFunc("/orphan", func(w http.ResponseWriter, r *http.Request) {
		err := exec.Command("sh", "-c", "sleep 0.3 >/dev/null 2>&1 &").Run()
		fmt.Fprint(w, err)
	})
	realClientRoutes(mux, pid)
	return mux
}

// record is one JSON log line of a helper process.
type record map[string]any

func (r record) str(k string) string {
	switch v := r[k].(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func (r record) int(k string) int {
	n, _ := strconv.Atoi(r.str(k))
	return n
}

// event is a lifecycle event of a pool: one Options.OnEvent call, as the
// helper logged it (logEvent).
type event struct {
	Kind       supervisor.EventKind
	Supervisor int               // pid of the supervisor that reported it, as it sees itself
	Worker     supervisor.Worker // the worker concerned, if any
	Uptime     time.Duration     // the worker's age at the event
	Status     string            // for EventExit: Exit.String(), "exit status N" or "killed by signal NAME"
	Stderr     string            // for EventExit: Exit.Stderr, the last line of a worker that died at start
	Delay      time.Duration     // for EventRefork
	Reason     string            // why (see supervisor.EventKind); for EventExit "" if the supervisor asked for it
	Pool       int               // for EventPoolReady: the number of workers
	NewPid     int               // Event.Pid: the new supervisor of a binary upgrade
}

// event decodes a record with msg eventMsg.
func (r record) event() event {
	// Zero for an event without a worker ("0001-01-01T00:00:00Z").
	started, _ := time.Parse(time.RFC3339Nano, r.str("started"))
	return event{
		Kind:       supervisor.EventKind(r.str("kind")),
		Supervisor: r.int("supervisor"),
		Worker: supervisor.Worker{ID: r.int("worker"), Slot: r.int("slot"), Generation: r.int("generation"),
			Pid: r.int("pid"), Started: started, State: supervisor.State(r.str("state"))},
		Uptime: time.Duration(r.int("uptime")), // slog writes a duration in nanoseconds
		Status: r.str("status"),
		Stderr: r.str("stderr"),
		Delay:  time.Duration(r.int("delay")),
		Reason: r.str("reason"),
		Pool:   r.int("pool"),
		NewPid: r.int("new_pid"),
	}
}

// unexpected reports whether e is the exit of a worker the supervisor had
// not asked to exit.
func (e event) unexpected() bool { return e.Kind == supervisor.EventExit && e.Reason != "" }

// clean reports whether e is the exit of a worker the supervisor had asked
// to exit, with status 0.
func (e event) clean() bool {
	return e.Kind == supervisor.EventExit && e.Reason == "" && e.Status == "exit status 0"
}

// pool is a helper process running a pool, in its own process group.
type pool struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string // host:port the pool serves on

	mu      sync.Mutex
	records []record
	changed chan struct{} // closed and replaced when records grows
	logDone chan struct{} // closed at EOF on stderr: every process of the group has exited
	exited  chan struct{} // closed when the helper has been reaped
	exit    *os.ProcessState
	others  []int // processes of the group that are not its children (a new supervisor), for cleanup
	// verdicts are the failures found with errorf and fatalf, reported
	// when the test ends, after the pool's log.
	verdicts []string
}

type poolConfig struct {
	mode        string // default "pool"
	addr        string // default "127.0.0.1:0"
	workers     int    // default 2
	shutdown    time.Duration
	migration   string        // Options.Migration; "" is auto
	heartbeat   time.Duration // Options.HeartbeatTimeout
	maxRequests int           // Options.MaxRequests
	surge       int           // Options.RestartSurge
	failUpgrade bool          // a new supervisor of a binary upgrade exits 1 before Run
	env         []string      // more environment
	files       []*os.File    // inherited as fd 3, 4, …
	shell       string        // run the helper as sh -c shell exe args (e.g. to set LISTEN_PID=$$)
	cloneflags  uintptr       // e.g. CLONE_NEWPID
	// unprivileged runs the pool as user nobody (uid and gid 65534), with no
	// capabilities, from a copy of the test binary that nobody can execute.
	unprivileged bool
	noWait       bool   // do not wait for the supervisor to start and its workers to be ready
	exe          string // the binary to run, if not this test binary (a copy of it)
	metrics      bool   // Options.Metrics on 127.0.0.1:0 (see envMetrics)
	// defaultWorkers leaves Options.Workers 0 (the CPUs the pool may use);
	// workers is then ignored.
	defaultWorkers bool
}

const nobody = 65534

// startPool starts a helper and waits until all its workers are ready. If
// the helper cannot start because the migration mechanism c.migration is not
// available here, the test is skipped with the helper's reason.
func startPool(t *testing.T, c poolConfig) *pool {
	t.Helper()
	if c.mode == "" {
		c.mode = "pool"
	}
	if c.addr == "" {
		c.addr = "127.0.0.1:0"
	}
	if c.workers == 0 {
		c.workers = 2
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if c.exe != "" {
		exe = c.exe
	}
	dir := ""
	if c.unprivileged {
		exe, dir = copyForNobody(t, exe)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	if c.shell != "" {
		cmd = exec.Command("sh", "-c", c.shell, exe, "-test.run=^$")
	}
	cmd.ExtraFiles = c.files
	cmd.Dir = dir
	// Under -race a process sleeps 1 s at exit (atexit_sleep_ms) unless told
	// not to, which would make every worker outlive a short stop timeout.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"), envHelper+"="+c.mode, envAddr+"="+c.addr, envWorkers+"="+strconv.Itoa(c.workers))
	if c.metrics {
		cmd.Env = append(cmd.Env, envMetrics+"=127.0.0.1:0")
	}
	if c.defaultWorkers {
		cmd.Env = append(cmd.Env, envWorkers+"=0")
	}
	for _, kv := range [][2]string{
		{envShutdown, durationEnv(c.shutdown)},
		{envMigration, c.migration},
		{envHeartbeat, durationEnv(c.heartbeat)},
		{envMaxRequests, intEnv(c.maxRequests)},
		{envSurge, intEnv(c.surge)},
	} {
		if kv[1] != "" {
			cmd.Env = append(cmd.Env, kv[0]+"="+kv[1])
		}
	}
	if c.failUpgrade {
		cmd.Env = append(cmd.Env, envFailUpgrade+"=1")
	}
	cmd.Env = append(cmd.Env, c.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: c.cloneflags}
	if c.unprivileged {
		// From uid 0 to another uid, execve clears every capability.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: nobody, Gid: nobody}
	}
	// The helper's stderr is a plain pipe, not cmd.StderrPipe: a new
	// supervisor started by a binary upgrade writes to it too and outlives
	// the helper, so reading it must not be tied to reaping the helper.
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		stderr.Close()
		t.Fatal(err)
	}
	p := &pool{t: t, cmd: cmd, changed: make(chan struct{}), logDone: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(p.logDone)
		defer stderr.Close()
		s := bufio.NewScanner(stderr)
		s.Buffer(nil, 1<<20)
		for s.Scan() {
			var r record
			if json.Unmarshal(s.Bytes(), &r) != nil {
				r = record{"msg": "raw", "line": s.Text()}
			}
			p.mu.Lock()
			p.records = append(p.records, r)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		cmd.Wait()
		p.mu.Lock()
		p.exit = cmd.ProcessState
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() {
		// The whole group: the supervisor, every worker it started and a
		// new supervisor of a binary upgrade with its workers.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		for _, c := range []struct {
			what string
			ch   chan struct{}
		}{{"reaped", p.exited}, {"gone (its stderr still open)", p.logDone}} {
			select {
			case <-c.ch:
			case <-time.After(10 * time.Second):
				t.Errorf("helper %d (group %d) not %s", cmd.Process.Pid, cmd.Process.Pid, c.what)
			}
		}
		p.mu.Lock()
		others := p.others
		p.mu.Unlock()
		waitGone(t, others, 10*time.Second)
		// A supervisor killed here cannot remove its control socket.
		for _, r := range p.all("control socket") {
			os.Remove(r.str("path"))
		}
		if t.Failed() {
			p.dump()
		}
		p.mu.Lock()
		verdicts := p.verdicts
		p.mu.Unlock()
		for _, v := range verdicts {
			t.Error(v)
		}
	})
	if !c.noWait {
		r, err := p.find(0, "", func(r record) bool {
			return r.str("msg") == "supervisor starting" || r.str("msg") == "run returned"
		}, 10*time.Second)
		if err != nil {
			t.Fatalf("waiting for \"supervisor starting\": %v", err)
		}
		if r.str("msg") == "run returned" {
			if e := r.str("err"); strings.Contains(e, "is not available here") {
				t.Skipf("SKIP: migration %q is not available on this machine: %s", c.migration, e)
			}
			t.Fatalf("the pool did not start: Run returned %q", r.str("err"))
		}
		p.addr = r.str("addr")
		ready, err := p.findEvent(0, supervisor.EventPoolReady, nil, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ready.Pool != c.workers && !c.defaultWorkers {
			t.Fatalf("the pool is ready with %d workers, want %d", ready.Pool, c.workers)
		}
	}
	return p
}

func durationEnv(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func intEnv(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// copyForNobody copies the test binary to a fresh directory that user
// nobody can enter and execute from (the test binary itself lives in a
// 0700 directory), removed when the test ends. It returns the copy's path
// and its directory.
func copyForNobody(t *testing.T, exe string) (string, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "clusterflock-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 == 0 {
			t.Skipf("SKIP: user nobody cannot enter %s, a parent of %s: no place for the unprivileged pool's binary", d, dir)
		}
		if d == "/" {
			break
		}
	}
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, "pool")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return path, dir
}

// alsoReap makes cleanup wait until pid, a process of the pool's group that
// is not the helper's child (a new supervisor), is gone too.
func (p *pool) alsoReap(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.others = append(p.others, pid)
}

// dump logs everything the helper wrote, for a failed test.
func (p *pool) dump() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.Logf("the pool's log, %d records:", len(p.records))
	for _, r := range p.records {
		b, _ := json.Marshal(r)
		p.t.Log(string(b))
	}
}

// errorf marks the test failed and reports the message when the test
// ends, after the pool's log, so that it comes last instead of above
// hundreds of lines. The message names the caller's file and line.
func (p *pool) errorf(format string, args ...any) {
	p.t.Helper()
	p.mu.Lock()
	p.verdicts = append(p.verdicts, callers()+fmt.Sprintf(format, args...))
	p.mu.Unlock()
	p.t.Fail()
}

// callers names the test's frames that led to a failure, innermost first
// ("lifecycle_test.go:120 < lifecycle_test.go:284: "), leaving out the
// harness's own.
func callers() string {
	pc := make([]uintptr, 16)
	frames := runtime.CallersFrames(pc[:runtime.Callers(2, pc)])
	var at []string
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "testing.") {
			break
		}
		if file := filepath.Base(f.File); file != "harness_test.go" {
			at = append(at, fmt.Sprintf("%s:%d", file, f.Line))
		}
		if !more {
			break
		}
	}
	if len(at) == 0 {
		return ""
	}
	return strings.Join(at, " < ") + ": "
}

// fatalf is errorf, then it stops the test.
func (p *pool) fatalf(format string, args ...any) {
	p.t.Helper()
	p.errorf(format, args...)
	p.t.FailNow()
}

// waitFor returns the first record from the start of the log with msg (any
// msg if "") and matching ok, if not nil, waiting up to timeout.
func (p *pool) waitFor(msg string, ok func(record) bool, timeout time.Duration) record {
	p.t.Helper()
	r, err := p.find(0, msg, ok, timeout)
	if err != nil {
		p.fatalf("%v", err)
	}
	return r
}

// waitFrom is waitFor from record index mark, with a 15 s limit.
func (p *pool) waitFrom(mark int, msg string, ok func(record) bool) record {
	p.t.Helper()
	r, err := p.find(mark, msg, ok, 15*time.Second)
	if err != nil {
		p.fatalf("%v", err)
	}
	return r
}

// find is waitFor from record index from, returning an error.
func (p *pool) find(from int, msg string, ok func(record) bool, timeout time.Duration) (record, error) {
	r, err := p.scan(from, func(r record) bool {
		return (msg == "" || r.str("msg") == msg) && (ok == nil || ok(r))
	}, timeout)
	if err != nil {
		return nil, fmt.Errorf("no %q in the log: %w", msg, err)
	}
	return r, nil
}

// scan returns the first record from index from that matches ok, waiting
// up to timeout for it (0: only the records so far).
func (p *pool) scan(from int, ok func(record) bool, timeout time.Duration) (record, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i := from; ; {
		p.mu.Lock()
		for ; i < len(p.records); i++ {
			if r := p.records[i]; ok(r) {
				p.mu.Unlock()
				return r, nil
			}
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.logDone:
			// Scan what remains once more, then give up.
			p.mu.Lock()
			n := len(p.records)
			p.mu.Unlock()
			if i >= n {
				return nil, errors.New("the helper's process group exited")
			}
		case <-deadline.C:
			return nil, fmt.Errorf("none after %v", timeout)
		}
	}
}

// mark returns the current log length, for find(from=mark).
func (p *pool) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.records)
}

// all returns every record with msg so far.
func (p *pool) all(msg string) []record {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []record
	for _, r := range p.records {
		if r.str("msg") == msg {
			out = append(out, r)
		}
	}
	return out
}

// findEvent returns the first event of kind (any kind if "") from record
// index from, matching ok if not nil, waiting up to timeout (0: only the
// events so far).
func (p *pool) findEvent(from int, kind supervisor.EventKind, ok func(event) bool, timeout time.Duration) (event, error) {
	r, err := p.scan(from, func(r record) bool {
		if r.str("msg") != eventMsg {
			return false
		}
		e := r.event()
		return (kind == "" || e.Kind == kind) && (ok == nil || ok(e))
	}, timeout)
	if err != nil {
		return event{}, fmt.Errorf("no matching %q event: %w", kind, err)
	}
	return r.event(), nil
}

// waitEvent is findEvent with a 15 s limit, failing the test if there is
// none.
func (p *pool) waitEvent(from int, kind supervisor.EventKind, ok func(event) bool) event {
	p.t.Helper()
	e, err := p.findEvent(from, kind, ok, 15*time.Second)
	if err != nil {
		p.fatalf("%v", err)
	}
	return e
}

// events returns every event of kind (any kind if "") from record index
// from so far, in order.
func (p *pool) events(from int, kind supervisor.EventKind) []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []event
	for _, r := range p.records[from:] {
		if r.str("msg") != eventMsg {
			continue
		}
		if e := r.event(); kind == "" || e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// waitCleanExit waits for the exit of worker pid from record index from,
// and fails the test unless the supervisor had asked for it and it exited 0.
func (p *pool) waitCleanExit(from, pid int) event {
	p.t.Helper()
	e := p.waitEvent(from, supervisor.EventExit, func(e event) bool { return e.Worker.Pid == pid })
	if !e.clean() {
		p.errorf("worker %d: %s (unexpected: %q), want exit status 0 on the supervisor's request", pid, e.Status, e.Reason)
	}
	return e
}

// waitUpgradeBegin waits for a binary upgrade begun after record index from
// and returns its new supervisor's pid, which cleanup then waits for too.
func (p *pool) waitUpgradeBegin(from int) int {
	p.t.Helper()
	e := p.waitEvent(from, supervisor.EventUpgrade, func(e event) bool { return e.Reason == "begin" })
	if e.NewPid <= 0 {
		p.fatalf("binary upgrade begun without a new supervisor: %+v", e)
	}
	p.alsoReap(e.NewPid)
	return e.NewPid
}

// upgradeOutcome waits for the end of a binary upgrade begun after record
// index from: the first "upgrade" event that is not its "begin" ("done", or
// "failed: " and the error).
func (p *pool) upgradeOutcome(from int) event {
	p.t.Helper()
	e, err := p.findEvent(from, supervisor.EventUpgrade, func(e event) bool { return e.Reason != "begin" }, 20*time.Second)
	if err != nil {
		p.fatalf("%v", err)
	}
	return e
}

func (p *pool) pid() int { return p.cmd.Process.Pid }

func (p *pool) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := syscall.Kill(p.pid(), sig); err != nil {
		p.fatalf("kill -%v %d: %v", sig, p.pid(), err)
	}
}

// wait waits for the helper to exit and returns its exit code and the error
// its Run returned ("" for nil).
func (p *pool) wait(timeout time.Duration) (int, string) {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.fatalf("supervisor %d still running after %v", p.pid(), timeout)
	}
	r, err := p.find(0, "run returned", func(r record) bool {
		return r.str("worker") == "false" && r.int("pid") == p.pid()
	}, 5*time.Second)
	if err != nil {
		p.fatalf("supervisor exited (%v) but did not log Run's return: %v", p.exit, err)
	}
	return p.exit.ExitCode(), r.str("err")
}

// workerPids returns the pids of the supervisor's live children.
func (p *pool) workerPids() []int {
	return childrenOf(p.pid())
}

// waitChildren waits until the supervisor has exactly n children.
func (p *pool) waitChildren(n int, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := p.workerPids()
		if len(got) == n {
			return
		}
		if time.Now().After(deadline) {
			p.fatalf("the supervisor has children %v after %v, want %d", got, timeout, n)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func childrenOf(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
	}
	return out
}

// get requests path on a fresh connection (no keep-alive), with a deadline,
// and returns the body.
func (p *pool) get(path string) (string, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + p.addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s: %s", resp.Status, b)
	}
	return string(b), nil
}

// slowRequest starts GET /slow?ms=ms on a fresh connection and waits until
// a worker's handler has started it; the channel receives its result.
func (p *pool) slowRequest(ms int) <-chan error {
	p.t.Helper()
	mark := p.mark()
	got := make(chan error, 1)
	go func() {
		_, err := p.get(fmt.Sprintf("/slow?ms=%d", ms))
		got <- err
	}()
	if _, err := p.find(mark, "slow request started", nil, 10*time.Second); err != nil {
		p.fatalf("%v", err)
	}
	return got
}

// pidsServing requests / on fresh connections until it has seen want
// distinct pids or timeout passes, and returns the set seen.
func (p *pool) pidsServing(want int, timeout time.Duration) map[string]int {
	seen := map[string]int{}
	deadline := time.Now().Add(timeout)
	for len(seen) < want && time.Now().Before(deadline) {
		body, err := p.get("/")
		if err != nil {
			p.fatalf("GET /: %v", err)
		}
		seen[body]++
	}
	return seen
}

// alive reports whether pid exists (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// waitGone waits until none of pids is alive.
func waitGone(t *testing.T, pids []int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var left []int
		for _, pid := range pids {
			if alive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v still alive after %v", left, timeout)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}
