// Command goserver is the Go server the benchmark measures. One binary, three
// shapes, chosen by environment variables (not flags: the pool re-executes
// this binary for every worker, and the environment is what workers inherit):
//
//	BENCH_MODE     single  one net/http process (the baseline)
//	               pool    clusterflock.Run with Workers = BENCH_WORKERS, library default GOMAXPROCS
//	               pool1   the same pool with Options.GOMAXPROCS = 1 per worker
//	               poolN   the same pool with Options.GOMAXPROCS = BENCH_WORKERS per worker
//	                       (the naive "every worker sees every CPU" setting; not in the default run)
//	               poolC   the pool with Options.Migration = "cbpf" (not in the default run)
//	               poolM   the same as pool with Options.Metrics set: the supervisor serves
//	                       GET /metrics on BENCH_METRICS_ADDR, and Run counts every request
//	               poolS   the same as pool with Options.StuckTimeout = 30s: every request
//	                       carries pprof labels and a progress-counting ResponseWriter
//	               poolSh  the same as pool with Options.Migration = "shared" (one socket)
//	               poolK   the same as pool with Options.KeepSysmonAwake
//	BENCH_DEFER_ACCEPT  single only: set TCP_DEFER_ACCEPT on the listener
//	BENCH_HANDLER  ok      writes "ok"
//	               alloc   allocates and discards about 320 KB (GC pressure), then writes "ok"
//	               sleep   sleeps 1 ms (I/O-bound), then writes "ok"
//	BENCH_ADDR     listen address, default 127.0.0.1:8080
//	BENCH_WORKERS  pool size, default runtime.NumCPU() (the run script passes the
//	               machine's CPU count so that pinning the server to one core does
//	               not shrink the pool)
//	BENCH_METRICS_ADDR  poolM only: where the supervisor serves /metrics (required;
//	               the harness picks a free port)
//
// Every response carries an X-Pid header with the answering process's PID.
// GET /info answers "pid=… gomaxprocs=… numcpu=…" so the harness can record
// what each process runs with.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "goserver:", err)
		os.Exit(1)
	}
}

func run() error {
	mode := envOr("BENCH_MODE", "single")
	addr := envOr("BENCH_ADDR", "127.0.0.1:8080")
	h, err := handler(envOr("BENCH_HANDLER", "ok"))
	if err != nil {
		return err
	}
	workers := runtime.NumCPU()
	if s := os.Getenv("BENCH_WORKERS"); s != "" {
		if workers, err = strconv.Atoi(s); err != nil || workers < 1 {
			return fmt.Errorf("bad BENCH_WORKERS %q", s)
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if os.Getenv("BENCH_VERBOSE") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	switch mode {
	case "single":
		return single(addr, h)
	case "pool", "pool1", "poolN", "poolC", "poolM", "poolS", "poolSh", "poolK":
		gomaxprocs, migration, metricsAddr := 0, "", "" // library defaults
		var stuck time.Duration
		switch mode {
		case "pool1":
			gomaxprocs = 1
		case "poolN":
			gomaxprocs = workers
		case "poolC":
			migration = "cbpf"
		case "poolSh":
			migration = "shared"
		case "poolM":
			if metricsAddr = os.Getenv("BENCH_METRICS_ADDR"); metricsAddr == "" {
				return errors.New("BENCH_MODE=poolM needs BENCH_METRICS_ADDR (host:port for /metrics)")
			}
		case "poolS":
			stuck = stuckTimeout
		}
		return runPool(addr, h, poolShape{workers: workers, gomaxprocs: gomaxprocs, migration: migration,
			metricsAddr: metricsAddr, stuck: stuck, sysmonAwake: mode == "poolK"}, logger)
	default:
		return fmt.Errorf("unknown BENCH_MODE %q (want single, pool, pool1, poolN, poolC, poolM, poolS, poolSh or poolK)", mode)
	}
}

// single serves h from this one process. The http.Server carries the same
// settings as the one clusterflock builds in each worker (see newServer).
func single(addr string, h http.Handler) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	defer stop()
	srv := newServer(addr, h)
	lc := net.ListenConfig{}
	if os.Getenv("BENCH_DEFER_ACCEPT") != "" {
		lc.Control = deferAccept
	}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// newServer mirrors the http.Server that clusterflock's worker builds
// (handler.go in the library): keep the two in step, so the baseline
// differs from the pool only in the process model.
func newServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
}

// poolShape is what the pool modes vary.
type poolShape struct {
	workers, gomaxprocs int
	migration           string
	metricsAddr         string        // poolM: Options.Metrics' address
	stuck               time.Duration // poolS: Options.StuckTimeout
	sysmonAwake         bool          // poolK: Options.KeepSysmonAwake
}

// stuckTimeout is poolS's Options.StuckTimeout: long enough that no
// request of the benchmark ever trips it, so only the per-request
// labelling is measured.
const stuckTimeout = 30 * time.Second

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// allocChunks × allocChunkSize bytes are allocated per request by the alloc
// handler. They are variables, not constants, so the compiler cannot prove
// the sizes and must put every chunk on the heap.
var (
	allocChunks    = 1280
	allocChunkSize = 256
)

func handler(name string) (http.Handler, error) {
	pid := strconv.Itoa(os.Getpid())
	body := []byte("ok")
	var work func()
	switch name {
	case "ok":
	case "alloc":
		work = func() {
			// About 320 KB in 1280 pointer-holding chunks: garbage the
			// collector has to find and sweep, like a request that decodes
			// and builds a response object graph.
			chunks := make([][]byte, allocChunks)
			var sum byte
			for i := range chunks {
				c := make([]byte, allocChunkSize)
				c[i%allocChunkSize] = byte(i)
				chunks[i] = c
				sum += c[0]
			}
			if sum == 255 && len(chunks) == 0 { // never true; keeps sum live
				panic("unreachable")
			}
		}
	case "sleep":
		work = func() { time.Sleep(time.Millisecond) }
	default:
		return nil, fmt.Errorf("unknown BENCH_HANDLER %q (want ok, alloc or sleep)", name)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/info" { // for the harness: which GOMAXPROCS this process runs with
			w.Header().Set("X-Pid", pid)
			fmt.Fprintf(w, "pid=%s gomaxprocs=%d numcpu=%d\n", pid, runtime.GOMAXPROCS(0), runtime.NumCPU())
			return
		}
		if work != nil {
			work()
		}
		w.Header().Set("X-Pid", pid)
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	}), nil
}

// deferAccept sets TCP_DEFER_ACCEPT (1 s) on a listening socket: the kernel
// completes accept only once the client's first bytes have arrived.
func deferAccept(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
