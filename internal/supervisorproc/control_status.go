//go:build unix

package supervisorproc

import (
	"context"
	"errors"

	"github.com/clusterflock/clusterflock/control"
	"github.com/clusterflock/clusterflock/internal/guard"
	"github.com/clusterflock/clusterflock/supervisor"
)

// status returns the pool's state as the dispatcher sees it, with each
// worker's RSS from /proc.
func (s *controlServer) status(ctx context.Context) (*control.Status, error) {
	a, err := s.call(ctx, nil)
	if err != nil {
		return nil, err
	}
	st := s.info()
	st.Desired = a.snap.Desired
	switch {
	case a.snap.Stopping:
		st.State = "stopping"
	case a.upgrader != 0:
		st.State = "upgrading"
	case a.snap.Rolling:
		st.State = "rolling"
	case a.snap.Degraded:
		st.State = "degraded"
	default:
		st.State = "serving"
	}
	for _, w := range a.snap.Workers {
		if w.State == supervisor.Ready {
			st.Ready++
		}
		st.Workers = append(st.Workers, control.WorkerStatus{Slot: w.Slot, Generation: w.Generation, PID: w.Pid,
			State: string(w.State), Started: w.Started, LastHeartbeat: w.LastSeen, RSS: rss(w.Pid),
			Served: w.Served, InFlight: w.InFlight})
	}
	st.LastReload, st.LastAt = s.bus.lastReload()
	return &st, nil
}

// rss returns pid's resident set size in bytes, or 0.
func rss(pid int) int64 {
	n, _ := guard.Resident(pid)
	return n
}

func isKilled(err error) bool { return errors.Is(err, supervisor.ErrKilled) }
