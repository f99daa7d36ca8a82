// Command hello is the clusterflock demo: a pool of workers on port 5000 (or
// $PORT) that answer with the PID of the worker that served the request.
//
//	go run ./examples/hello
//	curl localhost:5000          # "hello from worker 12345"
//	kill -TTIN <supervisor pid>  # one more worker
//	kill -TTOU <supervisor pid>  # one fewer (the oldest)
//	kill -HUP  <supervisor pid>  # rolling restart
//	kill -TERM <supervisor pid>  # graceful stop (Ctrl-C: immediate stop)
//
// With METRICS_ADDR=127.0.0.1:9100 the supervisor also serves the pool's
// merged metrics: curl 127.0.0.1:9100/metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/clusterflock/clusterflock"
	"github.com/clusterflock/clusterflock/metrics"
)

func main() {
	if !clusterflock.IsWorker() { // this code runs in every worker too
		port := os.Getenv("PORT")
		if port == "" {
			port = "5000"
		}
		fmt.Fprintf(os.Stderr, "clusterflock demo: supervisor pid %d; try: curl localhost:%s; kill -TTIN %d\n",
			os.Getpid(), port, os.Getpid())
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from worker %d\n", os.Getpid())
	})
	var opts clusterflock.Options
	if addr := os.Getenv("METRICS_ADDR"); addr != "" {
		opts.Metrics = &metrics.Exporter{Addr: addr}
	}
	err := clusterflock.Run(context.Background(), h, opts)
	switch {
	case errors.Is(err, clusterflock.ErrInterrupted):
		os.Exit(130) // Ctrl-C: the workers were killed at once, as asked
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
