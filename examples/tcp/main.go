// Command tcp serves a line-echo protocol (not HTTP) from a clusterflock pool
// with clusterflock.Serve: each worker gets its own listener and stops
// accepting when its context is done, finishing the connections it has.
//
//	go run ./examples/tcp            # listens on :5000 (or $PORT)
//	printf 'hi\n' | nc -q1 localhost 5000
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/clusterflock/clusterflock"
	"github.com/clusterflock/clusterflock/examples/tcp/echo"
)

func main() {
	if err := clusterflock.Serve(context.Background(), echo.Serve, clusterflock.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
