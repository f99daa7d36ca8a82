// Package echo is the line-echo server of examples/tcp: a clusterflock
// ServeFunc that answers each line with "<pid>: <line>".
package echo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
)

// Serve answers every line with "<pid>: <line>" until ctx is done, then
// stops accepting, closes idle connections and waits for the others to
// finish their current line.
func Serve(ctx context.Context, ln net.Listener) error {
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
