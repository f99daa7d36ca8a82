// Command hello is the clusterflock demo: a pool of workers on port 5000 (or
// $PORT) that answer with the PID of the worker that served the request.
//
//	go run ./examples/hello
//	curl localhost:5000          # "hello from worker 12345"
//	kill -TTIN <supervisor pid>  # one more worker
//	kill -TTOU <supervisor pid>  # one fewer (the oldest)
//	kill -TERM <supervisor pid>  # graceful stop
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/clusterflock/clusterflock"
)

func main() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from worker %d\n", os.Getpid())
	})
	if err := clusterflock.Run(context.Background(), h, clusterflock.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
