//go:build unix

package supervisorproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
)

// fakePool records the dispatcher's calls: "add", "retire", … and the
// events it reports as "refused: …", "upgrade: …".
type fakePool struct {
	calls   []string
	desired int // Snapshot's Desired
}

func (p *fakePool) call(c string) bool           { p.calls = append(p.calls, c); return true }
func (p *fakePool) Add() bool                    { return p.call("add") }
func (p *fakePool) StopFor(why string) bool      { return p.call("stop") }
func (p *fakePool) Retire() bool                 { return p.call("retire") }
func (p *fakePool) StopInTurn(why string) bool   { return p.call("stop in turn") }
func (p *fakePool) Kill() bool                   { return p.call("kill") }
func (p *fakePool) Restart() bool                { return p.call("restart") }
func (p *fakePool) Workers() []supervisor.Worker { return []supervisor.Worker{{ID: 1}} }
func (p *fakePool) Snapshot() supervisor.Snapshot {
	return supervisor.Snapshot{Workers: p.Workers(), Desired: p.desired}
}
func (p *fakePool) Report(e supervisor.Event) bool {
	s := fmt.Sprintf("%s: %s", e.Kind, e.Reason)
	if e.Pid != 0 {
		s += fmt.Sprintf(" (pid %d)", e.Pid)
	}
	return p.call(s)
}

// fakeListeners refuses what refusals says and records upgrade calls.
type fakeListeners struct {
	ownListeners
	refusals map[string]string // request → reason
	busy     string            // handOver's
	calls    []string
}

func (f *fakeListeners) refuse(req string) string { return f.refusals[req] }
func (f *fakeListeners) handOver() ([]*sockets.Socket, string) {
	f.calls = append(f.calls, "handOver")
	return nil, f.busy
}
func (f *fakeListeners) upgradeFailed(started bool) {
	f.calls = append(f.calls, fmt.Sprintf("upgradeFailed(%v)", started))
}

type dispatchHarness struct {
	d    *dispatcher
	pool *fakePool
	lis  *fakeListeners
	sd   *fakeNotifier
	// startErr, if set, makes the new supervisor fail to start.
	startErr error
	// handed is the pool size given to each new supervisor started.
	handed []int
}

func newDispatchHarness() *dispatchHarness {
	h := &dispatchHarness{pool: &fakePool{}, lis: &fakeListeners{refusals: map[string]string{}}, sd: &fakeNotifier{}}
	log := slog.New(slog.DiscardHandler)
	h.d = &dispatcher{
		cfg: Config{Logger: log, Timing: proto.NewTiming(0, 0)}, sup: h.pool, lis: h.lis,
		sd: &systemd{n: h.sd, log: log}, upgrades: make(chan upgradeResult, 1),
		startSuccessor: func(_ listeners, _ []*sockets.Socket, workers int, _ bool, _ *children, _ chan<- upgradeResult) (*successor, error) {
			h.handed = append(h.handed, workers)
			if h.startErr != nil {
				return nil, h.startErr
			}
			return &successor{pid: 4242}, nil
		},
	}
	return h
}

func (h *dispatchHarness) want(t *testing.T, calls ...string) {
	t.Helper()
	if diff := cmp.Diff(calls, h.pool.calls); diff != "" {
		t.Errorf("pool calls (-want +got):\n%s", diff)
	}
	h.pool.calls = nil
}

// Each signal is its action.
func TestDispatchSignals(t *testing.T) {
	h := newDispatchHarness()
	for _, sig := range []syscall.Signal{syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTERM} {
		h.d.signal(sig)
	}
	h.want(t, "add", "retire", "restart", "stop")
	h.d.signal(syscall.SIGINT)
	h.want(t, "kill")
	h.d.signal(syscall.SIGUSR2)
	h.want(t, "refused: USR2: binary upgrade: the pool is stopping")
}

// What the listeners refuse is refused with their reason, and only that.
func TestDispatchListenerRefusals(t *testing.T) {
	h := newDispatchHarness()
	h.lis.refusals[reqRetire] = "the old supervisor 7 is still draining"
	h.d.signal(syscall.SIGTTOU)
	h.d.signal(syscall.SIGTTIN)
	h.want(t, "refused: TTOU: the old supervisor 7 is still draining", "add")
}

// While a binary upgrade is under way, requests that change the pool are
// refused naming the new supervisor; its success stops this pool and hands
// systemd's MAINPID over.
func TestDispatchUpgradeDone(t *testing.T) {
	h := newDispatchHarness()
	h.pool.desired = 3 // scaled since the start
	h.d.signal(syscall.SIGUSR2)
	h.want(t, "upgrade: begin (pid 4242)")
	if diff := cmp.Diff([]int{3}, h.handed); diff != "" {
		t.Errorf("pool size handed to the new supervisor (-want +got):\n%s", diff)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP} {
		h.d.signal(sig)
	}
	h.d.signal(syscall.SIGUSR2)
	h.want(t, "refused: TTIN: a binary upgrade is under way (pid 4242)",
		"refused: TTOU: a binary upgrade is under way (pid 4242)",
		"refused: HUP: a binary upgrade is under way (pid 4242)",
		"refused: USR2: binary upgrade: one is already under way (pid 4242)")
	h.d.upgraded(upgradeResult{pid: 4242})
	h.want(t, "upgrade: done (pid 4242)", "stop in turn")
	if diff := cmp.Diff([]string{"MAINPID=4242"}, h.sd.sent); diff != "" {
		t.Errorf("systemd (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"handOver"}, h.lis.calls); diff != "" {
		t.Errorf("listener calls (-want +got):\n%s", diff)
	}
}

// A failed upgrade leaves this pool serving and its listeners are told; a
// new upgrade may follow.
func TestDispatchUpgradeFailed(t *testing.T) {
	h := newDispatchHarness()
	h.d.signal(syscall.SIGUSR2)
	h.d.upgraded(upgradeResult{pid: 4242, err: errors.New("new supervisor 4242 exited before its workers were ready: exit status 1")})
	h.d.signal(syscall.SIGTTIN)
	h.want(t, "upgrade: begin (pid 4242)",
		"upgrade: failed: new supervisor 4242 exited before its workers were ready: exit status 1 (pid 4242)", "add")

	h.startErr = errors.New("fork/exec: no such file")
	h.d.signal(syscall.SIGUSR2)
	h.want(t, "upgrade: failed: cannot start a new supervisor: fork/exec: no such file")
	h.lis.busy = "a retired worker is still draining"
	h.d.signal(syscall.SIGUSR2)
	h.want(t, "refused: USR2: binary upgrade: a retired worker is still draining")
	want := []string{"handOver", "upgradeFailed(true)", "handOver", "upgradeFailed(false)", "handOver"}
	if diff := cmp.Diff(want, h.lis.calls); diff != "" {
		t.Errorf("listener calls (-want +got):\n%s", diff)
	}
	if len(h.sd.sent) != 0 {
		t.Errorf("systemd told %q after a failed upgrade", h.sd.sent)
	}
}

// Signals are taken in as fast as they come, however slow acting on each
// is, and none is lost or reordered.
func TestIntakeNeverBlocks(t *testing.T) {
	in := make(chan os.Signal) // unbuffered: a send completes only when intake takes it
	out := make(chan os.Signal)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { intake(in, out, stop); close(done) }()
	var sent []os.Signal
	for i := range 1000 {
		sig := []os.Signal{syscall.SIGTTIN, syscall.SIGTTOU}[i%2]
		select {
		case in <- sig:
			sent = append(sent, sig)
		case <-time.After(10 * time.Second):
			t.Fatalf("intake blocked after %d signals with nobody acting on them", i)
		}
	}
	var got []os.Signal
	for range sent {
		got = append(got, <-out)
	}
	if diff := cmp.Diff(sent, got); diff != "" {
		t.Errorf("signals out (-sent +got):\n%s", diff)
	}
	close(stop)
	<-done
}

// notifyContext is what signal.NotifyContext gives once sig arrived.
func notifyContext(sig os.Signal) context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(signalCauseError(sig.String() + " signal received"))
	return ctx
}

// signalCauseError stands for os/signal's unexported cause type.
type signalCauseError string

func (e signalCauseError) Error() string        { return string(e) }
func (e signalCauseError) Is(target error) bool { return target == context.Canceled }

// SIGINT with the program's context ended by that SIGINT (NotifyContext)
// is a graceful stop; a second SIGINT kills. Without it, SIGINT kills.
func TestDispatchInterruptThroughContext(t *testing.T) {
	h := newDispatchHarness()
	h.d.ctx = notifyContext(os.Interrupt)
	h.d.signal(syscall.SIGINT)
	h.want(t, "stop")
	h.d.signal(syscall.SIGINT)
	h.want(t, "kill")

	synctest.Test(t, func(t *testing.T) {
		h := newDispatchHarness()
		h.d.ctx = context.Background() // never ends: after interruptWait, a kill
		h.d.signal(syscall.SIGINT)
		h.want(t, "kill")
		// A context ended by TERM does not make SIGINT graceful.
		h = newDispatchHarness()
		h.d.ctx = notifyContext(syscall.SIGTERM)
		h.d.signal(syscall.SIGINT)
		h.want(t, "kill")
	})
}

// With DrainDelay, TERM (or the context) begins the lame-duck period; the
// stop follows after the delay; a second TERM changes nothing; SIGINT
// during the delay kills.
func TestDispatchDrainDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newDispatchHarness()
		h.d.cfg.DrainDelay = 2 * time.Second
		h.d.lameDuck = &atomic.Bool{}
		h.d.signal(syscall.SIGTERM)
		h.d.signal(syscall.SIGQUIT)
		h.want(t, "lame-duck: requested; serving for DrainDelay 2s before the stop")
		if !h.d.lameDuck.Load() {
			t.Error("the hooks are not told of the lame-duck period")
		}
		start := time.Now()
		<-h.d.drained
		h.d.lameDuckOver()
		h.want(t, "stop")
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("stopped after %v, want DrainDelay", d)
		}

		h = newDispatchHarness()
		h.d.cfg.DrainDelay = 2 * time.Second
		h.d.lameDuck = &atomic.Bool{}
		h.d.ctx = context.Background()
		h.d.gracefulStop("context done")
		h.d.signal(syscall.SIGINT)
		h.want(t, "lame-duck: context done; serving for DrainDelay 2s before the stop", "kill")
	})
}

// A binary upgrade's new supervisor starts the old pool's size, smaller or
// larger than its own Options.Workers; otherwise Options.Workers applies.
func TestPoolSize(t *testing.T) {
	lis := &ownListeners{}
	for _, tc := range []struct {
		name     string
		cfg      Config
		h        *heir
		want     int
		wantFrom string
	}{
		{"no upgrade", Config{Workers: 2, WorkersFrom: WorkersFromCPUs}, nil, 2, WorkersFromCPUs},
		{"no upgrade, source unset", Config{Workers: 2}, nil, 2, WorkersFromOptions},
		{"scaled up", Config{Workers: 2, WorkersFrom: WorkersFromOptions}, &heir{workers: 3}, 3, WorkersFromUpgrade},
		{"scaled down", Config{Workers: 4, WorkersFrom: WorkersFromCPUs}, &heir{workers: 1}, 1, WorkersFromUpgrade},
		{"older build", Config{Workers: 2, WorkersFrom: WorkersFromOptions}, &heir{}, 2, WorkersFromOptions},
	} {
		n, from := poolSize(tc.cfg, lis, tc.h)
		if n != tc.want || from != tc.wantFrom {
			t.Errorf("%s: poolSize = %d from %q, want %d from %q", tc.name, n, from, tc.want, tc.wantFrom)
		}
	}
}
