//go:build unix

package workerproc

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
)

// The serve function's listener reports its close once, after the socket
// is closed, to a supervisor that reads the report (proto.EnvClosed), and
// to no other; every later Close says the listener is closed.
func TestReportingListener(t *testing.T) {
	for _, reads := range []bool{true, false} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := &reportingListener{Listener: raw, status: &statusWriter{f: w, readsClosed: reads}}
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Go(func() { errs[i] = ln.Close() })
		}
		wg.Wait()
		w.Close()
		nils := 0
		for _, err := range errs {
			switch {
			case err == nil:
				nils++
			case !errors.Is(err, net.ErrClosed):
				t.Errorf("Close() = %v; want nil once, then net.ErrClosed", err)
			}
		}
		if nils != 1 {
			t.Errorf("%d of 3 Close calls returned nil; want 1", nils)
		}
		if _, err := net.Dial("tcp", raw.Addr().String()); err == nil {
			t.Errorf("the listener still accepts connections after Close")
		}
		got, _ := io.ReadAll(r)
		r.Close()
		want := ""
		if reads {
			want = "closed\n"
		}
		if string(got) != want {
			t.Errorf("supervisor reading closed: %v: status pipe got %q; want %q", reads, got, want)
		}
	}
}
