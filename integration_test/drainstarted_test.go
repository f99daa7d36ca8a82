//go:build linux

package integration_test

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock"
)

// wsDrainEcho is /ws-drain: /ws's echo, whose handler also selects on
// clusterflock.DrainStarted and then says "close" and closes, as a
// websocket handler sends a close frame.
func wsDrainEcho(pid string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := switchProtocols(w, pid)
		if err != nil {
			return
		}
		defer conn.Close()
		lines, done := make(chan string), make(chan struct{})
		defer close(done)
		go func() {
			defer close(lines)
			for {
				line, err := rw.ReadString('\n')
				if err != nil {
					return
				}
				select {
				case lines <- line:
				case <-done:
					return
				}
			}
		}()
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					return
				}
				rw.WriteString(line)
			case <-clusterflock.DrainStarted(r.Context()):
				rw.WriteString("close\n")
				rw.Flush()
				return // the deferred Close; the reader goroutine then ends
			}
			if rw.Flush() != nil {
				return
			}
		}
	}
}

// TestWebsocketDrainStarted: a handler that selects on
// clusterflock.DrainStarted(r.Context()) learns that its worker drains
// (a rolling restart replaces it) and closes its hijacked connection
// cleanly: the client receives the close message, then EOF, soon after
// the worker was asked to stop (well before ShutdownTimeout, 5s), and the
// worker exits 0.
func TestWebsocketDrainStarted(t *testing.T) {
	const shutdown = 5 * time.Second
	p := startPool(t, poolConfig{workers: 1, shutdown: shutdown})
	ws := dialWSPath(t, p.addr, "/ws-drain")
	if err := ws.echo("hello"); err != nil {
		p.fatalf("%v", err)
	}
	mark := p.mark()
	p.signal(syscall.SIGHUP)
	stopped := p.stopTime(mark, ws.pid)
	ws.c.SetDeadline(time.Now().Add(shutdown + time.Second))
	msg, err := ws.br.ReadString('\n')
	got := time.Since(stopped)
	if err != nil || msg != "close\n" {
		p.fatalf("after the worker %d was asked to stop: %q, %v (%v later); want the handler's \"close\" message", ws.pid, msg, err, got.Round(time.Millisecond))
	}
	if err := ws.closed(); err != nil {
		p.errorf("after the close message: %v", err)
	}
	if got > shutdown/2 {
		p.errorf("the close message came %v after the worker was asked to stop, want it when the drain starts (ShutdownTimeout %v)", got.Round(time.Millisecond), shutdown)
	}
	exit := p.waitCleanExit(mark, ws.pid)
	t.Logf("DrainStarted: the close message came %v after the worker %d was asked to stop; it exited: %s", got.Round(time.Millisecond), ws.pid, exit.Status)
}
