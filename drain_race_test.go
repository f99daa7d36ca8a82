package clusterflock

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDrainRace: retire a server (httpServe's drain) under a load of new
// connections, many times; count connections Go accepted and then closed
// without any answer (client sees EOF with no byte).
func TestDrainRace(t *testing.T) {
	var eof, reset, ok, other atomic.Int64
	for i := 0; i < 300; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		o := options{Options: Options{ShutdownTimeout: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "x") })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- httpServe(h, o, newRequests(o), nil)(ctx, &onceCloseListener{Listener: ln}) }()
		quit := make(chan struct{})
		var wg sync.WaitGroup
		var n atomic.Int64
		for range 8 {
			wg.Go(func() {
				for {
					select {
					case <-quit:
						return
					default:
					}
					c, err := net.Dial("tcp", addr)
					if err != nil {
						other.Add(1)
						continue
					}
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
						reset.Add(1)
						c.Close()
						continue
					}
					br := bufio.NewReader(c)
					_, err = br.Peek(1)
					switch {
					case err == nil:
						ok.Add(1)
						n.Add(1)
					case err == io.EOF:
						eof.Add(1)
					default:
						reset.Add(1)
					}
					c.Close()
				}
			})
		}
		for n.Load() < 20 {
			time.Sleep(time.Millisecond)
		}
		cancel()
		<-done
		close(quit)
		wg.Wait()
	}
	t.Logf("answered %d, EOF without answer %d, reset %d, dial errors %d", ok.Load(), eof.Load(), reset.Load(), other.Load())
	if eof.Load() > 0 {
		t.Errorf("%d accepted connections closed without an answer", eof.Load())
	}
}
