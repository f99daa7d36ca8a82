package supervisor_test

import (
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/clusterflock/clusterflock/supervisor"
)

const (
	TERM = syscall.SIGTERM
	KILL = syscall.SIGKILL
)

// expectUnordered checks that the events since the last take are want, in
// any order (for exits that race each other).
func (h *harness) expectUnordered(want ...ev) {
	h.t.Helper()
	byID := cmpopts.SortSlices(func(a, b ev) bool { return a.ID < b.ID })
	if diff := cmp.Diff(want, h.take(), byID); diff != "" {
		h.t.Errorf("events, in any order (-want +got):\n%s", diff)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	sp := &fakeSpawner{}
	tests := []struct {
		name string
		cfg  supervisor.Config
		want string // in the error
	}{
		{"nil Spawner", supervisor.Config{}, "Spawner is nil"},
		{"Workers", supervisor.Config{Spawner: sp, Workers: -1}, "Config.Workers is negative"},
		{"StopTimeout", supervisor.Config{Spawner: sp, StopTimeout: -1}, "Config.StopTimeout is negative"},
		{"HeartbeatTimeout", supervisor.Config{Spawner: sp, HeartbeatTimeout: -time.Second}, "Config.HeartbeatTimeout is negative"},
		{"MaxStartFailures", supervisor.Config{Spawner: sp, MaxStartFailures: -2}, "Config.MaxStartFailures is negative"},
		{"BackoffBase", supervisor.Config{Spawner: sp, BackoffBase: -1}, "Config.BackoffBase is negative"},
		{"BackoffMax", supervisor.Config{Spawner: sp, BackoffMax: -1}, "Config.BackoffMax is negative"},
		{"YoungAge", supervisor.Config{Spawner: sp, YoungAge: -1}, "Config.YoungAge is negative"},
		{"Surge", supervisor.Config{Spawner: sp, Surge: -1}, "Config.Surge is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := supervisor.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() = %v, %v; want error containing %q", s, err, tt.want)
			}
			if s != nil {
				t.Errorf("New() returned a Supervisor with error %v", err)
			}
		})
	}
	if _, err := supervisor.New(supervisor.Config{Spawner: sp}); err != nil {
		t.Errorf("New(zero Config with a Spawner) = %v; want nil error", err)
	}
}

func TestStartSpawnsWorkersAndAnnouncesPoolReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 3}, nil)
		h.expect(eSpawn(1, 0, 0), eSpawn(2, 1, 0), eSpawn(3, 2, 0))

		var want []supervisor.Worker
		for i := range 3 {
			want = append(want, supervisor.Worker{ID: i + 1, Slot: i, State: supervisor.Starting})
		}
		if diff := cmp.Diff(want, h.sp.spawns()); diff != "" {
			t.Errorf("workers passed to Spawn (-want +got):\n%s", diff)
		}

		h.readyAll(1, 2)
		h.expect(eReady(1, 0, 0), eReady(2, 1, 0))
		h.proc(1).Ready() // a second ready changes nothing
		h.expect()
		h.readyAll(3)
		h.expect(eReady(3, 2, 0), ePoolReady())
		h.wantWorkers(wk(1, 0, 0, supervisor.Ready), wk(2, 1, 0, supervisor.Ready), wk(3, 2, 0, supervisor.Ready))
	})
}

func TestZeroWorkersMeansOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{}, nil)
		h.proc(1).Ready()
		h.expect(eSpawn(1, 0, 0), eReady(1, 0, 0), ePoolReady())
	})
}

func TestWorkersSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		h := start(t, supervisor.Config{Workers: 2}, nil)
		time.Sleep(time.Second)
		h.readyAll(2)
		want := []supervisor.Worker{
			{ID: 1, Slot: 0, Pid: 1001, Started: t0, State: supervisor.Starting, LastSeen: t0},
			{ID: 2, Slot: 1, Pid: 1002, Started: t0, State: supervisor.Ready, LastSeen: t0.Add(time.Second)},
		}
		if diff := cmp.Diff(want, h.sup.Workers()); diff != "" {
			t.Errorf("Workers() (-want +got):\n%s", diff)
		}
		if snap := h.sup.Snapshot(); snap.Desired != 2 || snap.Rolling || snap.Degraded || snap.Stopping {
			t.Errorf("Snapshot() = %+v; want 2 desired, serving", snap)
		}

		h.sup.Stop()
		if err := h.wait(); err != nil {
			t.Fatalf("Run() = %v; want nil", err)
		}
		if got := h.sup.Workers(); got != nil {
			t.Errorf("Workers() after Run returned = %v; want nil", got)
		}
		for name, f := range map[string]func() bool{
			"Add": h.sup.Add, "Retire": h.sup.Retire, "Restart": h.sup.Restart, "Stop": h.sup.Stop, "Kill": h.sup.Kill,
		} {
			if f() {
				t.Errorf("%s() after Run returned = true; want false", name)
			}
		}
	})
}

func TestReforkAtOnceAfterOldWorkerDies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 2, YoungAge: time.Second}, nil)
		h.readyAll(1, 2)
		h.take()

		time.Sleep(time.Second) // exactly YoungAge: no longer young
		h.proc(1).Exit(2)
		h.expect(eExit(1, 0, 0, code(2), "unexpected exit"), eRefork(0, 0), eSpawn(3, 0, 0))
		h.proc(3).Ready()
		h.expect(eReady(3, 0, 0)) // the pool was announced already

		time.Sleep(time.Second)
		h.proc(3).ExitSignal(syscall.SIGSEGV)
		h.expect(eExit(3, 0, 0, supervisor.Exit{Code: -1, Signal: syscall.SIGSEGV}, "unexpected exit"),
			eRefork(0, 0), eSpawn(4, 0, 0))
		h.wantWorkers(wk(2, 1, 0, supervisor.Ready), wk(4, 0, 0, supervisor.Starting))
	})
}

// A dead worker's re-fork is started before its exit is logged and passed
// to OnEvent (a slow stderr or OnEvent must not delay serving again); the
// events keep their order.
func TestReforkStartsBeforeExitIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h *harness
		var atFork []ev // the events reported when worker 3 was forked
		setup := func(w supervisor.Worker, _ *fakeProc) error {
			if w.ID == 3 {
				h.mu.Lock()
				atFork = append([]ev(nil), h.events...)
				h.mu.Unlock()
			}
			return nil
		}
		h = start(t, supervisor.Config{Workers: 2, YoungAge: time.Second}, setup)
		h.readyAll(1, 2)
		h.take()

		time.Sleep(time.Second)
		h.proc(1).ExitSignal(syscall.SIGKILL)
		h.expect(eExit(1, 0, 0, killed(), "unexpected exit"), eRefork(0, 0), eSpawn(3, 0, 0))
		for _, e := range atFork {
			if e.Kind == supervisor.EventExit || e.Kind == supervisor.EventRefork {
				t.Errorf("at the re-fork, %v was already reported; want it reported after", e)
			}
		}
	})
}

func TestBackoffGrowsForYoungDeathsAndResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			base  = 100 * time.Millisecond
			max   = time.Second
			young = 5 * time.Second
		)
		h := start(t, supervisor.Config{BackoffBase: base, BackoffMax: max, YoungAge: young}, nil)
		h.proc(1).Ready()
		h.expect(eSpawn(1, 0, 0), eReady(1, 0, 0), ePoolReady())

		id := 1
		// dieYoung makes the current worker die at once and checks that the
		// slot is forked again after exactly delay.
		dieYoung := func(delay time.Duration) {
			t.Helper()
			h.proc(id).Exit(1)
			if delay == 0 {
				h.expect(eExit(id, 0, 0, code(1), "unexpected exit"), eRefork(0, 0), eSpawn(id+1, 0, 0))
			} else {
				h.expect(eExit(id, 0, 0, code(1), "unexpected exit"), eRefork(0, delay))
				time.Sleep(delay - time.Nanosecond)
				h.expect()
				time.Sleep(time.Nanosecond)
				h.expect(eSpawn(id+1, 0, 0))
			}
			id++
			h.proc(id).Ready()
			h.expect(eReady(id, 0, 0))
		}
		for _, d := range []time.Duration{0, base, 2 * base, 4 * base, 8 * base, max, max} {
			dieYoung(d)
		}

		// A death at an older age resets the backoff.
		time.Sleep(young)
		h.proc(id).Exit(1)
		h.expect(eExit(id, 0, 0, code(1), "unexpected exit"), eRefork(0, 0), eSpawn(id+1, 0, 0))
		id++
		h.proc(id).Ready()
		h.take()
		for _, d := range []time.Duration{0, base, 2 * base} {
			dieYoung(d)
		}
	})
}

func TestStartFailuresGiveUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const why = "listen tcp :8080: bind: address already in use"
		h := start(t, supervisor.Config{MaxStartFailures: 3, BackoffBase: 100 * time.Millisecond}, nil)
		h.proc(1).Fail(why)
		h.proc(1).Exit(1)
		h.expect(eSpawn(1, 0, 0), eExit(1, 0, 0, code(1), "exited before ready"), eRefork(0, 0), eSpawn(2, 0, 0))

		h.proc(2).Exit(3)
		h.expect(eExit(2, 0, 0, code(3), "exited before ready"), eRefork(0, 100*time.Millisecond))
		time.Sleep(100 * time.Millisecond)
		h.expect(eSpawn(3, 0, 0))

		h.proc(3).Fail(why)
		h.proc(3).Exit(1)
		err := h.wait()
		h.expect(eExit(3, 0, 0, code(1), "exited before ready"), eStopping("graceful: workers fail to start"))

		var se *supervisor.StartError
		if !errors.As(err, &se) {
			t.Fatalf("Run() = %v; want a *StartError", err)
		}
		want := &supervisor.StartError{Failures: 3, Reason: why + " (exit status 1)"}
		if diff := cmp.Diff(want, se); diff != "" {
			t.Errorf("Run() error (-want +got):\n%s", diff)
		}
		if !strings.Contains(err.Error(), why) {
			t.Errorf("Run() error %q does not include the worker's message %q", err, why)
		}
	})
}

func TestForkErrorsCountAsStartFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := func(supervisor.Worker, *fakeProc) error { return errFork }
		h := start(t, supervisor.Config{Workers: 2, MaxStartFailures: 2}, fail)
		err := h.wait()
		// The second fork fails at once (a refork after one failure is not
		// delayed), so Run gives up before it forks slot 1.
		h.expect(eRefork(0, 0), eStopping("graceful: workers fail to start"))
		var se *supervisor.StartError
		if !errors.As(err, &se) {
			t.Fatalf("Run() = %v; want a *StartError", err)
		}
		want := &supervisor.StartError{Failures: 2, Reason: "fork: " + errFork.Error()}
		if diff := cmp.Diff(want, se); diff != "" {
			t.Errorf("Run() error (-want +got):\n%s", diff)
		}
		if n := len(h.sp.spawns()); n != 2 {
			t.Errorf("Spawn called %d times; want 2", n)
		}
	})
}

func TestReadyResetsStartFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const base = 100 * time.Millisecond
		h := start(t, supervisor.Config{MaxStartFailures: 2, BackoffBase: base}, nil)
		h.proc(1).Exit(1) // start failure 1
		h.expect(eSpawn(1, 0, 0), eExit(1, 0, 0, code(1), "exited before ready"), eRefork(0, 0), eSpawn(2, 0, 0))

		h.proc(2).Ready() // resets the count
		h.proc(2).Exit(1)
		h.expect(eReady(2, 0, 0), ePoolReady(), eExit(2, 0, 0, code(1), "unexpected exit"), eRefork(0, base))
		time.Sleep(base)
		synctest.Wait()
		h.proc(3).Exit(1) // start failure 1 again, not 2
		h.expect(eSpawn(3, 0, 0), eExit(3, 0, 0, code(1), "exited before ready"), eRefork(0, 2*base))
		if !h.running() {
			t.Fatalf("Run returned %v after one start failure since a worker was ready", h.err)
		}
		time.Sleep(2 * base)
		synctest.Wait()
		h.proc(4).Exit(1) // start failure 2
		var se *supervisor.StartError
		if err := h.wait(); !errors.As(err, &se) || se.Failures != 2 {
			t.Errorf("Run() = %v; want a *StartError with 2 failures", err)
		}
	})
}

func TestRetireStopsOldestWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 3}, nil)
		h.readyAll(1, 2, 3)
		time.Sleep(time.Minute)
		h.proc(1).Exit(1) // slot 0 now holds worker 4, the youngest
		synctest.Wait()
		h.proc(4).Ready()
		h.take()

		h.sup.Retire()
		h.expect(eStop(2, 1, 0, "retired"), eExit(2, 1, 0, code(0), ""))
		h.wantSignals(2, TERM)
		h.sup.Retire()
		h.expect(eStop(3, 2, 0, "retired"), eExit(3, 2, 0, code(0), ""))
		h.wantWorkers(wk(4, 0, 0, supervisor.Ready))

		h.sup.Retire()
		h.expect(eRefused("retire worker: the pool keeps at least one worker"))
		h.wantSignals(4)
		// The Spawner heard of each slot leaving before its worker was
		// asked to stop.
		if diff := cmp.Diff([]release{{Slot: 1}, {Slot: 2}}, h.sp.releases()); diff != "" {
			t.Errorf("releases (-want +got):\n%s", diff)
		}

		// Add takes the lowest free slot and announces the pool again.
		h.sup.Add()
		h.expect(eSpawn(5, 1, 0))
		h.proc(5).Ready()
		h.expect(eReady(5, 1, 0), ePoolReady())
	})
}

// A slot whose hooks ask for a drain keeps its worker serving (Draining, no
// signal) until the drain is over; the stop timeout runs from the stop.
func TestRetireDrainsBeforeStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drained := make(chan struct{})
		h := start(t, supervisor.Config{Workers: 2, StopTimeout: 2 * time.Second}, func(w supervisor.Worker, p *fakeProc) error {
			p.ignoreTerm()
			return nil
		})
		h.sp.drain = func(int) <-chan struct{} { return drained }
		h.readyAll(1, 2)
		h.take()

		h.sup.Retire()
		h.expect(eDrain(1, 0, 0, "retired"))
		h.wantWorkers(wk(1, 0, 0, supervisor.Draining), wk(2, 1, 0, supervisor.Ready))
		time.Sleep(time.Minute) // a drain may take long; it is the hooks' to bound
		h.wantSignals(1)
		h.sup.Retire()
		h.expect(eRefused("retire worker: the pool keeps at least one worker"))

		close(drained)
		h.expect(eStop(1, 0, 0, "retired"))
		h.wantSignals(1, TERM)
		time.Sleep(2*time.Second + time.Millisecond)
		h.expect(eKill(1, 0, 0, "still running 2s after SIGTERM"), eExit(1, 0, 0, killed(), ""))
		h.wantWorkers(wk(2, 1, 0, supervisor.Ready))
	})
}

// A worker that breaks the protocol is killed and replaced, with the
// violation as the reason; one that does so while starting counts as a
// start failure naming it.
func TestProtocolViolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 2}, nil)
		h.readyAll(1, 2)
		h.take()
		time.Sleep(time.Minute)
		h.proc(2).Invalid("more than 100 messages in a second")
		h.expect(eKill(2, 1, 0, "protocol violation: more than 100 messages in a second"),
			eExit(2, 1, 0, killed(), "killed: protocol violation: more than 100 messages in a second"),
			eRefork(1, 0), eSpawn(3, 1, 0))
		h.proc(3).Invalid("garbage")
		h.expect(eKill(3, 1, 0, "protocol violation: garbage"), eExit(3, 1, 0, killed(), "exited before ready"), eRefork(1, 0), eSpawn(4, 1, 0))
		h.proc(4).Ready()
		h.expect(eReady(4, 1, 0))
	})
}

// A pool that stops while a worker drains stops it at once.
func TestStopWhileDraining(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 2}, nil)
		h.sp.drain = func(int) <-chan struct{} { return make(chan struct{}) }
		h.readyAll(1, 2)
		h.take()
		h.sup.Retire()
		h.expect(eDrain(1, 0, 0, "retired"))
		h.sup.Stop()
		if err := h.wait(); err != nil {
			t.Fatalf("Run() = %v; want nil", err)
		}
		got := h.take()
		slices.SortStableFunc(got, func(a, b ev) int { return strings.Compare(string(a.Kind), string(b.Kind)) })
		want := []ev{eExit(1, 0, 0, code(0), ""), eExit(2, 1, 0, code(0), ""),
			eStop(1, 0, 0, "pool stopping"), eStop(2, 1, 0, "pool stopping"), eStopping("graceful: requested")}
		slices.SortStableFunc(got[:min(2, len(got))], func(a, b ev) int { return a.ID - b.ID })
		if diff := diffEvents(want, got); diff != "" {
			t.Errorf("events (-want +got):\n%s\nall: %v", diff, got)
		}
	})
}

func TestRetireRefusedWithOneWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{}, nil)
		h.proc(1).Ready()
		h.take()
		h.sup.Retire()
		h.expect(eRefused("retire worker: the pool keeps at least one worker"))
		h.wantSignals(1)
	})
}

func TestRequestsRefusedWhileStopping(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ignore := func(_ supervisor.Worker, p *fakeProc) error { p.ignoreTerm(); return nil }
		h := start(t, supervisor.Config{Workers: 2, StopTimeout: time.Minute}, ignore)
		h.readyAll(1, 2)
		h.take()

		h.sup.Stop()
		h.expect(eStopping("graceful: requested"), eStop(1, 0, 0, "pool stopping"), eStop(2, 1, 0, "pool stopping"))
		h.sup.Add()
		h.sup.Retire()
		h.sup.Restart()
		h.sup.Stop() // already stopping: nothing new
		h.expect(
			eRefused("add worker: the pool is stopping"),
			eRefused("retire worker: the pool is stopping"),
			eRefused("rolling restart: the pool is stopping"),
		)
		if n := len(h.sp.spawns()); n != 2 {
			t.Errorf("Spawn called %d times; want 2", n)
		}

		// Kill overrides a graceful stop.
		h.proc(1).Exit(0)
		h.expect(eExit(1, 0, 0, code(0), ""))
		h.sup.Kill()
		if err := h.wait(); !errors.Is(err, supervisor.ErrKilled) {
			t.Errorf("Run() = %v; want ErrKilled", err)
		}
		h.expect(eStopping("immediate: requested"), eKill(2, 1, 0, "immediate stop"), eExit(2, 1, 0, killed(), ""))
		h.wantSignals(2, TERM, KILL)
	})
}

func TestGracefulStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 2 * time.Second
		ignore := func(_ supervisor.Worker, p *fakeProc) error { p.ignoreTerm(); return nil }
		h := start(t, supervisor.Config{Workers: 3, StopTimeout: timeout}, ignore)
		h.readyAll(1, 2, 3)
		h.take()

		h.sup.Stop()
		h.expect(eStopping("graceful: requested"),
			eStop(1, 0, 0, "pool stopping"), eStop(2, 1, 0, "pool stopping"), eStop(3, 2, 0, "pool stopping"))
		for id := 1; id <= 3; id++ {
			h.wantSignals(id, TERM)
		}

		// The workers drain and exit in their own time, within the timeout.
		h.proc(2).Exit(0)
		time.Sleep(timeout / 2)
		h.proc(3).Exit(0)
		time.Sleep(timeout/2 - time.Nanosecond)
		if !h.running() {
			t.Fatalf("Run returned %v while worker 1 still runs", h.err)
		}
		h.proc(1).Exit(0)
		if err := h.wait(); err != nil {
			t.Errorf("Run() = %v; want nil", err)
		}
		h.expect(eExit(2, 1, 0, code(0), ""), eExit(3, 2, 0, code(0), ""), eExit(1, 0, 0, code(0), ""))
		for id := 1; id <= 3; id++ {
			h.wantSignals(id, TERM) // and no SIGKILL
		}
	})
}

func TestGracefulStopWellBehavedWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 3}, nil)
		h.readyAll(1, 2, 3)
		h.take()
		h.sup.Stop()
		if err := h.wait(); err != nil {
			t.Errorf("Run() = %v; want nil", err)
		}
		got := h.take()
		want := []ev{eStopping("graceful: requested"),
			eStop(1, 0, 0, "pool stopping"), eStop(2, 1, 0, "pool stopping"), eStop(3, 2, 0, "pool stopping")}
		if diff := cmp.Diff(want, got[:min(4, len(got))]); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
		// The exits race each other.
		wantExits := []ev{eExit(1, 0, 0, code(0), ""), eExit(2, 1, 0, code(0), ""), eExit(3, 2, 0, code(0), "")}
		byID := cmpopts.SortSlices(func(a, b ev) bool { return a.ID < b.ID })
		if diff := cmp.Diff(wantExits, got[min(4, len(got)):], byID); diff != "" {
			t.Errorf("exit events, in any order (-want +got):\n%s", diff)
		}
	})
}

func TestStopTimeoutKillsStragglers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 2 * time.Second
		setup := func(w supervisor.Worker, p *fakeProc) error {
			if w.ID == 2 {
				p.ignoreTerm()
			}
			return nil
		}
		h := start(t, supervisor.Config{Workers: 2, StopTimeout: timeout}, setup)
		h.readyAll(1, 2)
		h.take()

		h.sup.Stop()
		h.expect(eStopping("graceful: requested"), eStop(1, 0, 0, "pool stopping"), eStop(2, 1, 0, "pool stopping"),
			eExit(1, 0, 0, code(0), ""))
		time.Sleep(timeout - time.Nanosecond)
		h.expect()
		h.wantSignals(2, TERM)

		time.Sleep(time.Nanosecond)
		err := h.wait()
		h.expect(eKill(2, 1, 0, "still running 2s after SIGTERM"), eExit(2, 1, 0, killed(), ""))
		h.wantSignals(1, TERM)
		h.wantSignals(2, TERM, KILL)

		var ste *supervisor.StopTimeoutError
		if !errors.As(err, &ste) {
			t.Fatalf("Run() = %v; want a *StopTimeoutError", err)
		}
		if diff := cmp.Diff(&supervisor.StopTimeoutError{Timeout: timeout, Pids: []int{1002}}, ste); diff != "" {
			t.Errorf("Run() error (-want +got):\n%s", diff)
		}
		if !strings.Contains(err.Error(), "1002") {
			t.Errorf("Run() error %q does not name pid 1002", err)
		}
	})
}

func TestKill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ignore := func(_ supervisor.Worker, p *fakeProc) error { p.ignoreTerm(); return nil }
		h := start(t, supervisor.Config{Workers: 2}, ignore)
		h.readyAll(1) // worker 2 is still starting
		h.take()

		h.sup.Kill()
		if err := h.wait(); !errors.Is(err, supervisor.ErrKilled) {
			t.Errorf("Run() = %v; want ErrKilled", err)
		}
		got := h.take()
		want := []ev{eStopping("immediate: requested"), eKill(1, 0, 0, "immediate stop"), eKill(2, 1, 0, "immediate stop")}
		if diff := cmp.Diff(want, got[:min(3, len(got))]); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
		wantExits := []ev{eExit(1, 0, 0, killed(), ""), eExit(2, 1, 0, killed(), "")}
		byID := cmpopts.SortSlices(func(a, b ev) bool { return a.ID < b.ID })
		if diff := cmp.Diff(wantExits, got[min(3, len(got)):], byID); diff != "" {
			t.Errorf("exit events, in any order (-want +got):\n%s", diff)
		}
		h.wantSignals(1, KILL)
		h.wantSignals(2, KILL)
	})
}

func TestContextCancelStopsGracefully(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{}, nil)
		h.proc(1).Ready()
		h.take()
		h.cancel()
		if err := h.wait(); err != nil {
			t.Errorf("Run() = %v; want nil", err)
		}
		h.expect(eStopping("graceful: context done"), eStop(1, 0, 0, "pool stopping"), eExit(1, 0, 0, code(0), ""))
		h.wantSignals(1, TERM)
	})
}

func TestStopCancelsPendingRefork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{BackoffBase: time.Second}, nil)
		h.proc(1).Ready()
		h.proc(1).Exit(1)
		synctest.Wait()
		h.proc(2).Ready()
		h.proc(2).Exit(1)
		h.expect(eSpawn(1, 0, 0), eReady(1, 0, 0), ePoolReady(), eExit(1, 0, 0, code(1), "unexpected exit"),
			eRefork(0, 0), eSpawn(2, 0, 0), eReady(2, 0, 0), eExit(2, 0, 0, code(1), "unexpected exit"),
			eRefork(0, time.Second))
		h.sup.Stop()
		if err := h.wait(); err != nil {
			t.Errorf("Run() = %v; want nil", err)
		}
		time.Sleep(time.Hour)
		h.expect(eStopping("graceful: requested"))
		if n := len(h.sp.spawns()); n != 2 {
			t.Errorf("Spawn called %d times; want 2", n)
		}
	})
}

func TestRollingRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 3}, nil)
		h.readyAll(1, 2, 3)
		h.take()

		h.sup.Restart()
		h.expect(eRestart("begin"), eSpawn(4, 0, 1))
		h.wantSignals(1) // the old worker runs until its replacement is ready
		h.wantWorkers(wk(1, 0, 0, supervisor.Ready), wk(2, 1, 0, supervisor.Ready), wk(3, 2, 0, supervisor.Ready),
			wk(4, 0, 1, supervisor.Starting))

		h.sup.Add()
		h.sup.Retire()
		h.sup.Restart()
		h.expect(
			eRefused("add worker: a rolling restart is in progress"),
			eRefused("retire worker: a rolling restart is in progress"),
			eRefused("rolling restart: a rolling restart is in progress"),
		)

		h.proc(4).Ready()
		h.expect(eReady(4, 0, 1), eStop(1, 0, 0, "replaced"), eSpawn(5, 1, 1), eExit(1, 0, 0, code(0), ""))
		h.wantSignals(1, TERM)
		h.wantSignals(2)
		h.proc(5).Ready()
		h.expect(eReady(5, 1, 1), eStop(2, 1, 0, "replaced"), eSpawn(6, 2, 1), eExit(2, 1, 0, code(0), ""))
		h.wantSignals(3)
		h.proc(6).Ready()
		h.expect(eReady(6, 2, 1), eStop(3, 2, 0, "replaced"), eRestart("done"), ePoolReady(),
			eExit(3, 2, 0, code(0), ""))
		h.wantWorkers(wk(4, 0, 1, supervisor.Ready), wk(5, 1, 1, supervisor.Ready), wk(6, 2, 1, supervisor.Ready))

		for _, w := range h.sp.spawns()[3:] {
			if w.Generation != 1 {
				t.Errorf("Spawn(%+v): generation %d; want 1", w, w.Generation)
			}
		}

		// The next restart is generation 2, and the pool can change again.
		h.sup.Restart()
		h.expect(eRestart("begin"), eSpawn(7, 0, 2))
	})
}

func TestRollingRestartSurge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 3, Surge: 2}, nil)
		h.readyAll(1, 2, 3)
		h.take()
		h.sup.Restart()
		h.expect(eRestart("begin"), eSpawn(4, 0, 1), eSpawn(5, 1, 1))
		h.proc(5).Ready()
		h.expect(eReady(5, 1, 1), eStop(2, 1, 0, "replaced"), eSpawn(6, 2, 1), eExit(2, 1, 0, code(0), ""))
		h.proc(6).Ready()
		h.expect(eReady(6, 2, 1), eStop(3, 2, 0, "replaced"), eExit(3, 2, 0, code(0), ""))
		h.proc(4).Ready()
		h.expect(eReady(4, 0, 1), eStop(1, 0, 0, "replaced"), eRestart("done"), ePoolReady(),
			eExit(1, 0, 0, code(0), ""))
	})
}

func TestRollingRestartAbortsWhenReplacementFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 3}, nil)
		h.readyAll(1, 2, 3)
		h.take()

		h.sup.Restart()
		synctest.Wait()
		h.proc(4).Ready()
		h.expect(eRestart("begin"), eSpawn(4, 0, 1),
			eReady(4, 0, 1), eStop(1, 0, 0, "replaced"), eSpawn(5, 1, 1), eExit(1, 0, 0, code(0), ""))

		h.proc(5).Fail("config: bad value")
		h.proc(5).Exit(2)
		h.expect(eExit(5, 1, 1, code(2), "exited before ready"),
			eRestart("aborted: a new worker failed to start: config: bad value (exit status 2)"),
			ePoolReady())

		// The old workers keep serving and nothing is forked in their stead.
		time.Sleep(time.Hour)
		h.expect()
		h.wantSignals(2)
		h.wantSignals(3)
		h.wantWorkers(wk(2, 1, 0, supervisor.Ready), wk(3, 2, 0, supervisor.Ready), wk(4, 0, 1, supervisor.Ready))

		// The pool is no longer busy; the oldest worker is replaced first.
		h.sup.Restart()
		h.expect(eRestart("begin"), eSpawn(6, 1, 2))
	})
}

func TestRetiringWorkerIsReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 2}, nil)
		h.readyAll(1, 2)
		h.take()

		h.proc(2).Retiring("served 10000 requests")
		h.proc(2).Retiring("served 10000 requests") // already being replaced
		h.expect(eSpawn(3, 1, 0))
		h.wantSignals(2)
		h.sup.Add()
		h.expect(eRefused("add worker: a worker is being replaced"))

		h.proc(3).Ready()
		h.expect(eReady(3, 1, 0), eStop(2, 1, 0, "replaced"), eExit(2, 1, 0, code(0), ""))
		h.wantWorkers(wk(1, 0, 0, supervisor.Ready), wk(3, 1, 0, supervisor.Ready))
	})
}

// TestGuardsReplaceWorker: a worker that reports itself stuck or over its
// memory limit is replaced new-before-old, with an event saying why, and
// stopped with that reason; asking again meanwhile does nothing more.
func TestGuardsReplaceWorker(t *testing.T) {
	for _, c := range []struct {
		kind  supervisor.MessageKind
		event supervisor.EventKind
		why   string
	}{
		{supervisor.MessageStuck, supervisor.EventStuck, "stuck"},
		{supervisor.MessageMemory, supervisor.EventMemory, "memory"},
	} {
		t.Run(c.why, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := start(t, supervisor.Config{Workers: 2}, nil)
				h.readyAll(1, 2)
				h.take()
				h.proc(2).Send(c.kind, "the report")
				h.proc(2).Send(c.kind, "the report") // already being replaced
				h.expect(ev{Kind: c.event, ID: 2, Slot: 1, Reason: "the report"}, eSpawn(3, 1, 0))
				h.proc(3).Ready()
				h.expect(eReady(3, 1, 0), eStop(2, 1, 0, c.why), eExit(2, 1, 0, code(0), ""))
				h.wantWorkers(wk(1, 0, 0, supervisor.Ready), wk(3, 1, 0, supervisor.Ready))
			})
		})
	}
}

func TestHeartbeatTimeoutKillsSilentWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hb = time.Second
		h := start(t, supervisor.Config{Workers: 2, HeartbeatTimeout: hb, YoungAge: hb / 2}, nil)
		h.readyAll(1, 2)
		h.expect(eSpawn(1, 0, 0), eSpawn(2, 1, 0), eReady(1, 0, 0), eReady(2, 1, 0), ePoolReady())

		// Worker 1 beats; worker 2 goes silent. The supervisor looks every
		// hb/4, so worker 2 is found silent for more than hb at 5/4 hb.
		beat := func(d time.Duration) {
			for range d / (hb / 4) {
				time.Sleep(hb / 4)
				h.proc(1).Heartbeat()
			}
		}
		beat(hb)
		h.expect()
		h.wantSignals(2)
		beat(hb / 4)
		h.expect(eKill(2, 1, 0, "no heartbeat for 1s"), eExit(2, 1, 0, killed(), "killed: no heartbeat for 1s"),
			eRefork(1, 0), eSpawn(3, 1, 0))
		h.wantSignals(2, KILL)
		h.wantSignals(1)

		h.proc(3).Ready()
		h.proc(3).Heartbeat()
		beat(2 * hb)
		h.expect(eReady(3, 1, 0), eKill(3, 1, 0, "no heartbeat for 1s"),
			eExit(3, 1, 0, killed(), "killed: no heartbeat for 1s"), eRefork(1, 0), eSpawn(4, 1, 0))
	})
}

func TestHeartbeatTimeoutKillsWorkerThatNeverStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{HeartbeatTimeout: time.Second, MaxStartFailures: 1}, nil)
		err := h.wait()
		h.expect(eSpawn(1, 0, 0), eKill(1, 0, 0, "no heartbeat for 1s"),
			eExit(1, 0, 0, killed(), "exited before ready"), eStopping("graceful: workers fail to start"))
		want := &supervisor.StartError{Failures: 1, Reason: "killed by signal KILL"}
		var se *supervisor.StartError
		if !errors.As(err, &se) {
			t.Fatalf("Run() = %v; want a *StartError", err)
		}
		if diff := cmp.Diff(want, se); diff != "" {
			t.Errorf("Run() error (-want +got):\n%s", diff)
		}
	})
}

// A retirement drops a slot waiting for its re-fork before it stops a
// worker that serves (the pool would otherwise serve nothing meanwhile).
func TestRetirePrefersPendingRefork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 3, BackoffBase: time.Second}, nil)
		h.readyAll(1, 2, 3)
		h.proc(2).Exit(1) // young death 1: refork at once
		synctest.Wait()
		h.proc(4).Exit(1) // young death 2: slot 1 waits
		h.take()
		h.sup.Retire()
		h.expect(ev{Kind: supervisor.EventStop, Slot: 1, Reason: "retired"})
		h.wantSignals(1)
		h.wantSignals(3)
		time.Sleep(time.Minute)
		h.expect() // slot 1 is not re-forked
	})
}

func TestRetireWithOnlyPendingReforksDropsOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const base = time.Second
		h := start(t, supervisor.Config{Workers: 2, BackoffBase: base}, nil)
		h.readyAll(1, 2)
		h.proc(1).Exit(1) // young death 1: refork at once
		synctest.Wait()
		h.proc(2).Exit(1) // young death 2: slot 1 waits base
		synctest.Wait()
		h.proc(3).Ready()
		h.proc(3).Exit(1) // young death 3: slot 0 waits 2*base
		h.take()
		h.wantWorkers()

		h.sup.Retire() // no live worker: the highest pending slot is dropped
		time.Sleep(2 * base)
		h.expect(ev{Kind: supervisor.EventStop, Slot: 1, Reason: "retired"}, eSpawn(4, 0, 0))
		h.proc(4).Ready()
		h.expect(eReady(4, 0, 0)) // announced already, at the start
		h.wantWorkers(wk(4, 0, 0, supervisor.Ready))
		h.sup.Retire()
		h.expect(eRefused("retire worker: the pool keeps at least one worker"))
	})
}

// A rolling restart must end (done or aborted) even when a replacement fails
// to start after the worker it replaces has died.
func TestRollingRestartEndsWhenOldDiedAndReplacementFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 2}, nil)
		h.readyAll(1, 2)
		h.take()

		h.sup.Restart()
		h.expect(eRestart("begin"), eSpawn(3, 0, 1))
		h.proc(1).Exit(1) // the old worker dies; its replacement is on the way
		synctest.Wait()
		h.proc(3).Exit(1) // and the replacement fails
		h.expect(eExit(1, 0, 0, code(1), "unexpected exit"), eExit(3, 0, 1, code(1), "exited before ready"),
			eRestart("aborted: a new worker failed to start: exit status 1"), eRefork(0, 0), eSpawn(4, 0, 1))
		h.proc(4).Ready()
		synctest.Wait()
		time.Sleep(time.Minute)
		h.sup.Add()
		for _, e := range h.take() {
			if e.Kind == supervisor.EventRefused {
				t.Errorf("Add() after the aborted restart: %v", e)
			}
		}
	})
}

// The text of a worker's failed message describes that worker only: it must
// not be attached to another worker's start failure.
func TestFailedTextIsNotAttributedToAnotherWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One worker, so that the pool stops at the first start failure
		// (with another serving it would degrade instead).
		h := start(t, supervisor.Config{Workers: 1, MaxStartFailures: 1}, nil)
		h.readyAll(1)
		h.proc(1).Fail("database unreachable")
		time.Sleep(time.Minute)
		h.proc(1).Exit(1) // a ready worker dies: not a start failure
		synctest.Wait()
		h.proc(2).Exit(3) // its successor dies before ready, saying nothing
		var se *supervisor.StartError
		if err := h.wait(); !errors.As(err, &se) {
			t.Fatalf("Run() = %v; want a *StartError", err)
		}
		if diff := cmp.Diff(&supervisor.StartError{Failures: 1, Reason: "exit status 3"}, se); diff != "" {
			t.Errorf("Run() error (-want +got):\n%s", diff)
		}
	})
}

// A slot whose workers keep failing to start does not stop a pool whose
// other workers serve: it is degraded, keeps trying at the capped backoff,
// and recovers when a worker starts again. Only with none serving does Run
// give up.
func TestDegradedWhileOthersServe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, supervisor.Config{Workers: 2, MaxStartFailures: 3, BackoffMax: time.Second}, nil)
		h.readyAll(1, 2)
		h.take()
		time.Sleep(time.Minute)
		h.proc(2).Exit(1) // slot 1 crashes; its binary is gone, say
		synctest.Wait()
		for id := 3; id <= 8; id++ {
			h.proc(id).Exit(1)
			time.Sleep(time.Second) // the capped backoff
		}
		got := h.take()
		var degraded []ev
		for _, e := range got {
			if e.Kind == supervisor.EventDegraded {
				degraded = append(degraded, e)
			}
		}
		want := []ev{{Kind: supervisor.EventDegraded, Reason: "3 workers in a row exited before becoming ready; last: exit status 1; 1 of 2 slots serve"}}
		if diff := diffEvents(want, degraded); diff != "" {
			t.Errorf("degraded events (-want +got):\n%s", diff)
		}
		if !h.running() {
			t.Fatalf("Run returned %v while worker 1 serves", h.err)
		}
		h.wantSignals(1)
		h.proc(9).Ready()
		h.expect(eReady(9, 1, 0), ev{Kind: supervisor.EventRecovered, ID: 9, Slot: 1})

		// Now with nobody serving: the pool gives up.
		h.proc(1).Exit(1)
		h.proc(9).Exit(1)
		synctest.Wait()
		for id := 10; h.running() && id < 30; id++ {
			if p := h.sp.get(id); p != nil {
				p.Exit(1)
			}
			time.Sleep(time.Second)
		}
		var se *supervisor.StartError
		if err := h.wait(); !errors.As(err, &se) {
			t.Fatalf("Run() = %v; want a *StartError once no worker serves", err)
		}
	})
}

func TestExitString(t *testing.T) {
	for _, tt := range []struct {
		e    supervisor.Exit
		want string
	}{
		{supervisor.Exit{Code: 0}, "exit status 0"},
		{supervisor.Exit{Code: 3}, "exit status 3"},
		{supervisor.Exit{Code: -1, Signal: syscall.SIGKILL}, "killed by signal KILL"},
		{supervisor.Exit{Code: -1, Signal: syscall.SIGSEGV}, "killed by signal SEGV"},
		{supervisor.Exit{Code: -1, Signal: syscall.Signal(200)}, "killed by signal signal 200"},
	} {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("%#v.String() = %q; want %q", tt.e, got, tt.want)
		}
	}
}

func TestSpawnerFunc(t *testing.T) {
	var got supervisor.Worker
	f := supervisor.SpawnerFunc(func(w supervisor.Worker) (supervisor.Process, error) {
		got = w
		return nil, errFork
	})
	w := supervisor.Worker{ID: 7, Slot: 2, Generation: 1}
	if _, err := f.Spawn(w); err != errFork {
		t.Errorf("Spawn() error = %v; want %v", err, errFork)
	}
	if got != w {
		t.Errorf("SpawnerFunc called with %+v; want %+v", got, w)
	}
}
