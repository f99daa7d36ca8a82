package clusterflock_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock"
	"github.com/clusterflock/clusterflock/supervisor"
)

// A pool of one worker per CPU on :5000 (or $PORT), each answering with its
// PID. The example is compiled, not run: Run re-executes the program.
func ExampleRun() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from worker %d\n", os.Getpid())
	})
	if err := clusterflock.Run(context.Background(), h, clusterflock.Options{}); err != nil {
		log.Fatal(err)
	}
}

// Options with a fixed address and worker count, and the usual context:
// Ctrl-C and TERM end it, which the pool makes one graceful stop (a second
// Ctrl-C stops at once).
func ExampleRun_options() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := clusterflock.Options{
		Addr:            "127.0.0.1:8080",
		Workers:         4,
		ShutdownTimeout: 10 * time.Second,
	}
	if err := clusterflock.Run(ctx, http.NotFoundHandler(), opts); err != nil {
		log.Fatal(err)
	}
}

// The README's complete main: start-up that only workers need behind
// IsWorker (code before Run runs in the supervisor too), a readiness
// probe that fails in the lame-duck period, the guards, ErrInterrupted as
// exit status 130, and no log.Fatal, so that deferred cleanup runs.
func ExampleRun_main() {
	var cache map[string]string
	if clusterflock.IsWorker() {
		cache = map[string]string{} // per-worker state; the supervisor serves nothing
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello", len(cache)) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if clusterflock.Draining(r.Context()) {
			http.Error(w, "draining", http.StatusServiceUnavailable)
		}
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := clusterflock.Run(ctx, mux, clusterflock.Options{
		ShutdownTimeout: 10 * time.Second,
		DrainDelay:      5 * time.Second,
		StuckTimeout:    30 * time.Second,
		MemoryLimit:     512 << 20,
	})
	switch {
	case errors.Is(err, clusterflock.ErrInterrupted):
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Serve runs any server that accepts on a net.Listener, here a line echo.
// On stop, ctx is done: stop accepting, finish what is in flight, return nil.
func ExampleServe() {
	serve := func(ctx context.Context, ln net.Listener) error {
		go func() { <-ctx.Done(); ln.Close() }()
		for {
			c, err := ln.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil // asked to stop
				}
				return err
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}
	if err := clusterflock.Serve(context.Background(), serve, clusterflock.Options{Workers: 2}); err != nil {
		log.Fatal(err)
	}
}

// An http.Server template sets timeouts and TLS the standard way; OnEvent
// exports lifecycle events, and handlers can tell which worker they run in.
func ExampleOptions() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wk, _ := clusterflock.WorkerFromContext(r.Context())
		fmt.Fprintf(w, "slot %d, generation %d, pid %d\n", wk.Slot, wk.Generation, wk.PID)
	})
	var crashes atomic.Int64 // e.g. exported as a metric
	opts := clusterflock.Options{
		Server: &http.Server{
			ReadHeaderTimeout: 5 * time.Second,
			WriteTimeout:      30 * time.Second,
			// TLSConfig: &tls.Config{Certificates: certs}, // then workers serve HTTPS
		},
		MaxRequests:       10000, // recycle each worker after 10000–11000 requests
		MaxRequestsJitter: 1000,
		OnEvent: func(ev supervisor.Event) {
			if ev.Kind == supervisor.EventExit && ev.Reason != "" {
				crashes.Add(1) // must not block
			}
		},
	}
	if err := clusterflock.Run(context.Background(), h, opts); err != nil {
		log.Fatal(err)
	}
}

// A long-lived connection (here a server-sent-events stream; a websocket
// handler does the same with its close message) ends cleanly when its
// worker drains: retired, replaced by a rolling restart or a guard, or the
// pool stopping. Until it ends, the worker waits for it, up to
// ShutdownTimeout.
func ExampleDrainStarted() {
	events := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-clusterflock.DrainStarted(r.Context()):
				fmt.Fprint(w, "event: reconnect\ndata: this worker is going away\n\n")
				return // the response ends; the client reconnects to another worker
			case <-r.Context().Done():
				return
			case t := <-tick.C:
				fmt.Fprintf(w, "data: %s\n\n", t.Format(time.RFC3339))
				http.NewResponseController(w).Flush()
			}
		}
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := clusterflock.Run(ctx, events, clusterflock.Options{ShutdownTimeout: 10 * time.Second}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
