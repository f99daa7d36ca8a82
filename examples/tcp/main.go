// Command tcp serves a line-echo protocol (not HTTP) from a clusterflock pool
// with clusterflock.Serve: each worker gets its own listener and stops
// accepting when its context is done, finishing the connections it has.
//
//	go run ./examples/tcp            # listens on :5000 (or $PORT)
//	printf 'hi\n' | nc -q1 localhost 5000
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/clusterflock/clusterflock"
)

func main() {
	if err := clusterflock.Serve(context.Background(), serveEcho, clusterflock.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// serveEcho answers every line with "<pid>: <line>" until ctx is done, then
// waits for open connections to finish their current line and close.
func serveEcho(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Go(func() {
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() }) // drop idle clients on stop
			defer stop()
			s := bufio.NewScanner(c)
			for s.Scan() {
				fmt.Fprintf(c, "%d: %s\n", os.Getpid(), s.Text())
			}
		})
	}
}
