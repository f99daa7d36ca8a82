package sockets

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/clusterflock/clusterflock/reuseport"
)

// A reservation on an address where another SO_REUSEPORT listener already
// listens reports it, with the process that holds it.
func TestReservationCheckFree(t *testing.T) {
	res, err := Reserve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if err := res.CheckFree(); err != nil {
		t.Fatalf("a fresh port: %v", err)
	}
	ln, err := reuseport.Listen(context.Background(), "tcp", res.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var inUse *InUseError
	if err := res.CheckFree(); !errors.As(err, &inUse) {
		if _, derr := sockdiagListeners(res); derr != nil {
			t.Skipf("sock_diag unavailable here: %v", derr)
		}
		t.Fatalf("CheckFree with a listener on %s: %v, want *InUseError", res.Addr(), err)
	}
	if inUse.Sockets != 1 || !slices.Contains(inUse.Pids, os.Getpid()) {
		t.Errorf("InUseError %+v: want 1 socket held by this process (%d)", inUse, os.Getpid())
	}
}
