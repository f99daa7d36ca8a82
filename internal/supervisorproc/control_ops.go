//go:build unix

package supervisorproc

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/clusterflock/clusterflock/control"
	"github.com/clusterflock/clusterflock/supervisor"
)

// do carries out req and returns its outcome (the last reply); progress
// sends the replies before it.
func (s *controlServer) do(ctx context.Context, req control.Request, progress func(control.Reply)) control.Reply {
	switch req.Op {
	case control.OpStatus:
		st, err := s.status(ctx)
		return outcome(err, control.Reply{Status: st})
	case control.OpEvents:
		return s.stream(ctx, progress)
	case control.OpAdd:
		return outcome(s.scaleBy(ctx, syscall.SIGTTIN), control.Reply{})
	case control.OpRemove:
		return outcome(s.scaleBy(ctx, syscall.SIGTTOU), control.Reply{})
	case control.OpScale:
		return outcome(s.scaleTo(ctx, req.N, progress), control.Reply{})
	case control.OpReload:
		return outcome(s.reload(ctx, progress), control.Reply{})
	case control.OpUpgrade:
		pid, err := s.upgrade(ctx)
		return outcome(err, control.Reply{NewPID: pid})
	case control.OpStop:
		sig := syscall.SIGTERM
		if req.Now {
			sig = syscall.SIGINT
		}
		return outcome(s.stop(ctx, sig), control.Reply{})
	}
	return control.Reply{Done: true, Error: "unknown operation " + req.Op}
}

// outcome is the last reply: r, done, with err if any.
func outcome(err error, r control.Reply) control.Reply {
	r.Done, r.OK = true, err == nil
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// call asks the dispatcher, in order with the signals.
func (s *controlServer) call(ctx context.Context, sig os.Signal) (answer, error) {
	res := make(chan answer, 1)
	select {
	case s.d.calls <- call{sig: sig, result: res}:
	case <-ctx.Done():
		return answer{}, ctx.Err()
	case <-s.done:
		return answer{}, fmt.Errorf("the pool has stopped")
	}
	return <-res, nil
}

// act asks for sig's action and fails with the refusal, if any.
func (s *controlServer) act(ctx context.Context, sig os.Signal) error {
	a, err := s.call(ctx, sig)
	if err == nil && a.refused != "" {
		err = fmt.Errorf("refused: %s", a.refused)
	}
	return err
}

// await reads events until match says the outcome is known (done true; err
// the failure), the client hangs up or the pool stops.
func (s *controlServer) await(ctx context.Context, evs <-chan control.Event, match func(control.Event) (bool, error)) error {
	for {
		select {
		case e, ok := <-evs:
			if !ok {
				return fmt.Errorf("too many events to follow; the outcome is unknown")
			}
			if done, err := match(e); done {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return fmt.Errorf("the pool stopped")
		}
	}
}

// refusedAs matches the supervisor's refusal of an action whose reasons
// begin with prefix.
func refusedAs(e control.Event, prefix string) error {
	if e.Kind == string(supervisor.EventRefused) && strings.HasPrefix(e.Reason, prefix) {
		return fmt.Errorf("refused: %s", e.Reason)
	}
	return nil
}

// scaleBy adds (TTIN) or retires (TTOU) one worker and waits until the pool
// has its new size: the new worker serves, or the retired one has exited.
func (s *controlServer) scaleBy(ctx context.Context, sig syscall.Signal) error {
	evs, cancel := s.bus.subscribe()
	defer cancel()
	if err := s.act(ctx, sig); err != nil {
		return err
	}
	retired := 0
	return s.await(ctx, evs, func(e control.Event) (bool, error) {
		if sig == syscall.SIGTTIN {
			if err := refusedAs(e, "add worker: "); err != nil {
				return true, err
			}
			return e.Kind == string(supervisor.EventPoolReady), nil
		}
		if err := refusedAs(e, "retire worker: "); err != nil {
			return true, err
		}
		if (e.Kind == string(supervisor.EventStop) || e.Kind == string(supervisor.EventDrain)) && e.Reason == supervisor.ReasonRetired && retired == 0 {
			retired = e.Worker
		}
		return e.Kind == string(supervisor.EventExit) && e.Worker == retired && retired != 0, nil
	})
}

// scaleTo adds or retires workers one at a time until the pool has n.
func (s *controlServer) scaleTo(ctx context.Context, n int, progress func(control.Reply)) error {
	for {
		a, err := s.call(ctx, nil)
		if err != nil {
			return err
		}
		have := a.snap.Desired
		if have == n {
			return nil
		}
		sig, next := syscall.SIGTTIN, have+1
		if have > n {
			sig, next = syscall.SIGTTOU, have-1
		}
		if err := s.scaleBy(ctx, sig); err != nil {
			return fmt.Errorf("at %d workers of %d: %w", have, n, err)
		}
		progress(control.Reply{Progress: fmt.Sprintf("workers: %d → %d", have, next)})
	}
}

// reload runs a rolling restart and waits until every worker is new and
// every old one has exited, or the restart aborts (with the failing new
// worker's last stderr line).
func (s *controlServer) reload(ctx context.Context, progress func(control.Reply)) error {
	evs, cancel := s.bus.subscribe()
	defer cancel()
	if err := s.act(ctx, syscall.SIGHUP); err != nil {
		return err
	}
	stderr, done := "", false
	old := map[int]bool{} // replaced workers not yet exited
	return s.await(ctx, evs, func(e control.Event) (bool, error) {
		if err := refusedAs(e, "rolling restart: "); err != nil {
			return true, err
		}
		switch {
		case e.Kind == string(supervisor.EventStop) && e.Reason == supervisor.ReasonReplaced:
			old[e.Worker] = true
			progress(control.Reply{Progress: fmt.Sprintf("slot %d: worker %d replaced", e.Slot, e.PID)})
		case e.Kind == string(supervisor.EventExit):
			delete(old, e.Worker)
			if e.Stderr != "" {
				stderr = e.Stderr
			}
		case e.Kind == string(supervisor.EventRestart) && e.Reason == "done":
			done = true
		case e.Kind == string(supervisor.EventRestart) && strings.HasPrefix(e.Reason, "aborted: "):
			err := fmt.Errorf("rolling restart %s; the old workers keep serving", e.Reason)
			if stderr != "" && !strings.Contains(e.Reason, stderr) {
				err = fmt.Errorf("%w; the new worker wrote: %s", err, stderr)
			}
			return true, err
		}
		return done && len(old) == 0, nil
	})
}

// upgrade runs a binary upgrade and waits until the new supervisor serves
// (its pid) or failed (its error).
func (s *controlServer) upgrade(ctx context.Context) (int, error) {
	evs, cancel := s.bus.subscribe()
	defer cancel()
	if err := s.act(ctx, syscall.SIGUSR2); err != nil {
		return 0, err
	}
	pid := 0
	err := s.await(ctx, evs, func(e control.Event) (bool, error) {
		if e.Kind != string(supervisor.EventUpgrade) || e.Reason == "begin" {
			return false, nil
		}
		pid = e.NewPID
		if e.Reason == "done" {
			return true, nil
		}
		return true, fmt.Errorf("binary upgrade %s; the old pool keeps serving", e.Reason)
	})
	return pid, err
}

// stop stops the pool (graceful with TERM, at once with INT) and waits for
// its result.
func (s *controlServer) stop(ctx context.Context, sig syscall.Signal) error {
	if err := s.act(ctx, sig); err != nil {
		return err
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.result != nil && !(sig == syscall.SIGINT && isKilled(s.result)) {
		return s.result
	}
	return nil
}

// stream sends every event until the client hangs up or the pool stops.
func (s *controlServer) stream(ctx context.Context, progress func(control.Reply)) control.Reply {
	evs, cancel := s.bus.subscribe()
	defer cancel()
	for {
		select {
		case e, ok := <-evs:
			if !ok {
				return outcome(fmt.Errorf("the client fell too far behind"), control.Reply{})
			}
			progress(control.Reply{Event: &e})
		case <-ctx.Done():
			return outcome(nil, control.Reply{})
		case <-s.done:
			return outcome(nil, control.Reply{})
		}
	}
}
