//go:build unix

package supervisorproc

import (
	"sync/atomic"

	"github.com/clusterflock/clusterflock/supervisor"
)

// hooks is the supervisor.Hooks of a pool: it tells the listeners, systemd
// and a binary upgrade's handshake what the supervisor does.
type hooks struct {
	lis     listeners
	heir    *heir // nil unless this supervisor is a binary upgrade's new one
	sd      *systemd
	ctl     *controlServer // nil without a control socket
	ctlPath string         // the control socket's path, which a heir takes over when ready
	// lameDuck is set during the lame-duck period (Options.DrainDelay): a
	// worker ready then (a re-fork) is told at once.
	lameDuck *atomic.Bool
}

func (h *hooks) WorkerReady(w supervisor.Worker) {
	h.lis.ready(w)
	if h.lameDuck != nil && h.lameDuck.Load() {
		tellDraining(w.Pid)
	}
}

func (h *hooks) WorkerStopping(w supervisor.Worker)   { h.lis.stopping(w) }
func (h *hooks) WorkerExited(w supervisor.Worker)     { h.lis.exited(w) }
func (h *hooks) SlotLeaving(slot int) <-chan struct{} { return h.lis.leaving(slot) }
func (h *hooks) Restart(phase string)                 { h.sd.restart(phase) }

func (h *hooks) PoolReady(n int) {
	h.lis.poolReady()
	if h.heir != nil {
		h.ctl.takeOver(h.ctlPath)
	}
	h.heir.ready()
	h.sd.poolReady(n)
}

func (h *hooks) PoolStopping(reason string) {
	h.lis.poolStopping()
	h.sd.stopping(reason)
}
