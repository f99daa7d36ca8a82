package supervisor_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

// ignoreTerm makes every worker keep running on SIGTERM.
func ignoreTerm(_ supervisor.Worker, p *fakeProc) error { p.ignoreTerm(); return nil }

// startThree starts a pool of 3 workers that ignore SIGTERM, with surge
// and stopTimeout, and has them ready.
func startThree(t *testing.T, surge int, stopTimeout time.Duration) *harness {
	t.Helper()
	h := start(t, supervisor.Config{Workers: 3, Surge: surge, StopTimeout: stopTimeout}, ignoreTerm)
	h.readyAll(1, 2, 3)
	h.take()
	return h
}

// A pool's stop after a binary upgrade (its listeners' group lives on)
// asks its workers to stop one at a time: each once the one before has
// closed its listener; StopTimeout runs from each worker's own request.
func TestStopInTurnWaitsForClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = time.Second
		h := startThree(t, 1, timeout)

		h.sup.StopInTurn("binary upgrade")
		h.expect(eStopping("graceful: binary upgrade"), eStop(1, 0, 0, "pool stopping"))
		h.wantSignals(1, TERM)
		h.wantSignals(2)
		h.wantSignals(3)
		h.wantWorkers(wk(1, 0, 0, supervisor.Stopping), wk(2, 1, 0, supervisor.Ready), wk(3, 2, 0, supervisor.Ready))

		time.Sleep(10 * time.Millisecond)
		h.proc(1).Closed()
		h.expect(eStop(2, 1, 0, "pool stopping"))
		h.wantSignals(2, TERM)
		h.wantSignals(3)

		time.Sleep(10 * time.Millisecond)
		h.proc(2).Closed()
		h.expect(eStop(3, 2, 0, "pool stopping"))
		h.wantSignals(3, TERM)

		// Worker 1 was asked 20 ms before worker 3: it is killed first.
		time.Sleep(timeout - 15*time.Millisecond)
		h.expect(eKill(1, 0, 0, "still running 1s after SIGTERM"), eExit(1, 0, 0, killed(), ""))
		h.wantSignals(2, TERM)
		time.Sleep(10 * time.Millisecond)
		h.expect(eKill(2, 1, 0, "still running 1s after SIGTERM"), eExit(2, 1, 0, killed(), ""))
		h.wantSignals(3, TERM)
		time.Sleep(10 * time.Millisecond)
		h.expect(eKill(3, 2, 0, "still running 1s after SIGTERM"), eExit(3, 2, 0, killed(), ""))
		h.wait()
	})
}

// A worker that never reports its listener closed (an older build's)
// holds up the next one for CloseWait only; one that exits, not at all.
func TestStopInTurnWithoutClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startThree(t, 1, time.Minute)

		h.sup.StopInTurn("binary upgrade")
		h.expect(eStopping("graceful: binary upgrade"), eStop(1, 0, 0, "pool stopping"))
		time.Sleep(supervisor.CloseWait - time.Millisecond)
		h.wantSignals(2)
		time.Sleep(time.Millisecond)
		h.expect(eStop(2, 1, 0, "pool stopping"))
		h.wantSignals(2, TERM)
		h.wantSignals(3)

		h.proc(2).Exit(0)
		h.expect(eExit(2, 1, 0, code(0), ""), eStop(3, 2, 0, "pool stopping"))
		h.wantSignals(3, TERM)

		// A late report of a worker whose turn has passed changes nothing.
		h.proc(1).Closed()
		h.expect()
		h.proc(1).Exit(0)
		h.proc(3).Exit(0)
		h.take()
		if err := h.wait(); err != nil {
			t.Errorf("Run() = %v; want nil", err)
		}
	})
}

// A pool's stop that nothing outlives asks every worker at once, also
// those waiting their turn in a rolling restart.
func TestStopAllAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startThree(t, 3, time.Minute)

		h.sup.Restart()
		h.expect(eRestart("begin"), eSpawn(4, 0, 1), eSpawn(5, 1, 1), eSpawn(6, 2, 1))
		h.readyAll(4, 5)
		h.expect(eReady(4, 0, 1), eStop(1, 0, 0, "replaced"), eReady(5, 1, 1))
		h.wantSignals(2) // waiting its turn: it still serves

		h.sup.Stop()
		h.expect(eStopping("graceful: requested"), eStop(2, 1, 0, "pool stopping"),
			eStop(3, 2, 0, "pool stopping"), eStop(4, 0, 1, "pool stopping"),
			eStop(5, 1, 1, "pool stopping"), eStop(6, 2, 1, "pool stopping"))
		for id := 1; id <= 6; id++ {
			h.wantSignals(id, TERM)
		}
	})
}

// Old workers whose replacements become ready together (RestartSurge)
// stop one at a time.
func TestRollingRestartStopsInTurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startThree(t, 3, time.Minute)

		h.sup.Restart()
		synctest.Wait()
		h.readyAll(4, 5, 6)
		h.expect(eRestart("begin"), eSpawn(4, 0, 1), eSpawn(5, 1, 1), eSpawn(6, 2, 1),
			eReady(4, 0, 1), eStop(1, 0, 0, "replaced"), eReady(5, 1, 1), eReady(6, 2, 1))
		h.wantWorkers(wk(1, 0, 0, supervisor.Stopping), wk(2, 1, 0, supervisor.Ready), wk(3, 2, 0, supervisor.Ready),
			wk(4, 0, 1, supervisor.Ready), wk(5, 1, 1, supervisor.Ready), wk(6, 2, 1, supervisor.Ready))
		h.proc(1).Closed()
		h.expect(eStop(2, 1, 0, "replaced"))
		h.wantSignals(3)
		h.proc(2).Closed()
		// The restart is done once every old worker has been asked to
		// stop (metrics count those stops as the restart's).
		h.expect(eStop(3, 2, 0, "replaced"), eRestart("done"), ePoolReady())
		h.wantSignals(3, TERM)
	})
}

// A worker that exits while it waits its turn was not asked to: its exit
// says so, and it is not re-forked (its slot's replacement serves).
func TestExitWhileWaitingTurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startThree(t, 3, time.Minute)
		h.sup.Restart()
		synctest.Wait()
		h.readyAll(4, 5)
		h.take()
		h.proc(2).Exit(1)
		h.expect(eExit(2, 1, 0, code(1), "exited while waiting its turn to stop"))
		h.proc(1).Closed()
		h.expect() // nobody waits
		h.wantWorkers(wk(1, 0, 0, supervisor.Stopping), wk(3, 2, 0, supervisor.Ready),
			wk(4, 0, 1, supervisor.Ready), wk(5, 1, 1, supervisor.Ready), wk(6, 2, 1, supervisor.Starting))
	})
}
