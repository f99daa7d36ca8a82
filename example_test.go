package clusterflock_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock"
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

// Options with a fixed address and worker count, and a context that stops
// the pool gracefully on the program's own terms.
func ExampleRun_options() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGUSR1)
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
