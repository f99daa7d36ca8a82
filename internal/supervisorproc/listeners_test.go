//go:build linux

package supervisorproc

import (
	"log/slog"
	"net"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
)

// Each worker of an own-listener pool opens its own socket: the supervisor
// passes none, holds the port, and has nothing to hand over.
func TestOwnListeners(t *testing.T) {
	res, err := sockets.Reserve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &ownListeners{res: res, mig: sockets.MigrationNone}
	defer lis.Close()
	if f, err := lis.listener(0); f != nil || err != nil {
		t.Errorf("listener(0) = %v, %v; want none", f, err)
	}
	if socks, busy := lis.handOver(); socks != nil || busy != "" {
		t.Errorf("handOver() = %v, %q; want nothing", socks, busy)
	}
	if lis.inherited() || lis.leaving(0) != nil || lis.refuse(reqAdd) != "" {
		t.Error("own listeners: inherited, a drain to wait for, or a refusal")
	}
}

// Every worker of a shared-listener pool, a standby included, inherits the
// one socket, which a binary upgrade hands over.
func TestSharedListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock, err := sockets.HoldListener(ln)
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	lis := &sharedListener{sock: sock, address: "x"}
	defer lis.Close()
	for _, slot := range []int{proto.StandbySlot, 0, 3} {
		f, err := lis.listener(slot)
		if err != nil || f == nil {
			t.Fatalf("listener(%d) = %v, %v; want the shared socket", slot, f, err)
		}
		fl, err := net.FileListener(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if fl.Addr().String() != ln.Addr().String() {
			t.Errorf("listener(%d) listens on %s, want %s", slot, fl.Addr(), ln.Addr())
		}
		fl.Close()
	}
	if socks, busy := lis.handOver(); len(socks) != 1 || socks[0] != sock || busy != "" {
		t.Errorf("handOver() = %v, %q; want the shared socket", socks, busy)
	}
	if !lis.inherited() || lis.migration() != sockets.MigrationShared {
		t.Error("shared listener: not inherited, or not migration shared")
	}
}

// recordingListeners records the hooks' calls.
type recordingListeners struct {
	ownListeners
	calls []string
}

func (r *recordingListeners) ready(w supervisor.Worker)    { r.calls = append(r.calls, "ready") }
func (r *recordingListeners) stopping(w supervisor.Worker) { r.calls = append(r.calls, "stopping") }
func (r *recordingListeners) exited(w supervisor.Worker)   { r.calls = append(r.calls, "exited") }
func (r *recordingListeners) poolReady()                   { r.calls = append(r.calls, "poolReady") }
func (r *recordingListeners) poolStopping()                { r.calls = append(r.calls, "poolStopping") }
func (r *recordingListeners) leaving(slot int) <-chan struct{} {
	r.calls = append(r.calls, "leaving")
	return nil
}

// The supervisor's hooks reach the listeners, systemd and the new
// supervisor's handshake.
func TestHooks(t *testing.T) {
	lis := &recordingListeners{}
	n := &fakeNotifier{}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := &hooks{lis: lis, heir: &heir{status: w}, sd: &systemd{n: n, log: slog.New(slog.DiscardHandler), addr: "a"}}
	var sh supervisor.Hooks = h
	sh.WorkerReady(supervisor.Worker{})
	sh.PoolReady(1)
	sh.SlotLeaving(0)
	sh.WorkerStopping(supervisor.Worker{})
	sh.WorkerExited(supervisor.Worker{})
	sh.PoolStopping("graceful: requested")
	if diff := cmp.Diff([]string{"ready", "poolReady", "leaving", "stopping", "exited", "poolStopping"}, lis.calls); diff != "" {
		t.Errorf("listener calls (-want +got):\n%s", diff)
	}
	if m, err := proto.NewReader(r).Next(); err != nil || m.Kind != proto.Ready {
		t.Errorf("the old supervisor was told %+v, %v; want ready", m, err)
	}
	if len(n.sent) != 2 {
		t.Errorf("systemd was told %q; want READY and STOPPING", n.sent)
	}
}
