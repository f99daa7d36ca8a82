//go:build unix

package supervisorproc

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
)

// heir is the new supervisor's side of a binary upgrade (see upgrade.go):
// set up when this process was started by an old supervisor.
type heir struct {
	env    proto.UpgradeEnv
	status *os.File          // nil once "ready" or "failed" is sent
	socks  []*sockets.Socket // the sockets inherited from ListenerFD on
	lost   bool              // an inherited socket could not be taken over
	// workers is the old pool's size (proto.EnvUpgradeWorkers), or 0 if
	// the old supervisor, an older build, did not say it, or if the value
	// it passed on was not its own (stale, logged).
	workers int
	// handover is the metrics hand-over channel from the old supervisor
	// (proto.HandoverFD), or nil.
	handover *os.File
}

// init marks the descriptors a new supervisor inherits close-on-exec before
// any of the program's code runs (see workerproc's init).
func init() {
	if u, ok, err := proto.LookupUpgrade(); ok && err == nil {
		syscall.CloseOnExec(proto.StatusFD)
		if os.Getenv(proto.EnvHandover) == "1" {
			syscall.CloseOnExec(proto.HandoverFD)
		}
		for i := range max(u.Socks, 1) {
			syscall.CloseOnExec(proto.ListenerFD + i)
		}
	}
}

// takeHeir reads and removes the upgrade marker; it returns nil if this
// process was not started as a successor by its parent.
func takeHeir(log *slog.Logger) *heir {
	env, ok, err := proto.LookupUpgrade()
	size, sizeSet := os.LookupEnv(proto.EnvUpgradeWorkers)
	os.Unsetenv(proto.EnvUpgradeWorkers) // workers must not see it, marker or not
	if !ok {
		return nil
	}
	os.Unsetenv(proto.EnvUpgrade)
	if err != nil {
		log.Warn("ignoring an upgrade marker that does not name this process's parent", "err", err.Error())
		return nil
	}
	h := &heir{env: env, status: os.NewFile(proto.StatusFD, "clusterflock-upgrade")}
	if sizeSet {
		if h.workers, err = proto.UpgradeWorkers(size, env.OldPID); err != nil {
			log.Warn("binary upgrade: ignoring the old pool's size: Options.Workers applies", "err", err.Error())
		}
	}
	if proto.TakeFlag(proto.EnvHandover) {
		h.handover = os.NewFile(proto.HandoverFD, "clusterflock-handover")
	}
	n := env.Socks
	if env.Shared {
		n = 1
	}
	for i := range n {
		if s := inheritedSocket(proto.ListenerFD+i, log); s != nil {
			h.socks = append(h.socks, s)
		} else {
			h.lost = true
		}
	}
	return h
}

// inheritedSocket takes over the socket at fd, or logs why not and returns
// nil (the new supervisor then fails to start for want of it).
func inheritedSocket(fd int, log *slog.Logger) *sockets.Socket {
	s, err := sockets.Adopt(os.NewFile(uintptr(fd), "clusterflock-listener"))
	if err != nil {
		log.Error("cannot take over an inherited socket", "fd", fd, "err", err.Error())
		return nil
	}
	return s
}

// listeners returns the pool's listeners made of what the old supervisor
// passed, or nil if it passed none (each worker opens its own).
func (h *heir) listeners(cfg Config) (listeners, error) {
	if h.lost {
		h.closeSockets()
		return nil, errors.New("clusterflock: binary upgrade: cannot take over the old supervisor's sockets (logged above)")
	}
	switch {
	case h.env.Shared:
		if cfg.Migration != sockets.MigrationAuto && cfg.Migration != sockets.MigrationShared {
			h.closeSockets()
			return nil, fmt.Errorf("clusterflock: Options.Migration %q does not apply: workers share one listener (inherited from the old supervisor)", cfg.Migration)
		}
		return &sharedListener{sock: h.socks[0], address: h.env.Addr}, nil
	case len(h.socks) > 0:
		if cfg.Migration != sockets.MigrationAuto && cfg.Migration != sockets.MigrationCBPF {
			h.closeSockets()
			return nil, fmt.Errorf("clusterflock: Options.Migration %q does not apply: the old supervisor passed a steered group (%q)", cfg.Migration, sockets.MigrationCBPF)
		}
		return h.steered(cfg)
	}
	return nil, nil
}

// steered adopts the steered group the old supervisor passed.
func (h *heir) steered(cfg Config) (listeners, error) {
	g, err := sockets.AdoptGroup(h.socks)
	if err != nil {
		h.closeSockets()
		return nil, fmt.Errorf("clusterflock: binary upgrade: %w", err)
	}
	res, err := sockets.Reserve(h.env.Addr)
	if err != nil {
		g.CloseAll()
		return nil, fmt.Errorf("clusterflock: binary upgrade: %w", err)
	}
	s, err := adoptSteered(g, res, h.env.OldPID, cfg.Logger, cfg.Timing)
	if err != nil {
		g.CloseAll()
		res.Close()
		return nil, fmt.Errorf("clusterflock: migration %q on %s: %w", sockets.MigrationCBPF, h.env.Addr, err)
	}
	return s, nil
}

// takeHandover returns the metrics hand-over channel (nil if none), which
// the caller then owns.
func (h *heir) takeHandover() *os.File {
	if h == nil {
		return nil
	}
	f := h.handover
	h.handover = nil
	return f
}

// closeHandover closes the hand-over channel of a supervisor without
// metrics: the old one's totals are not wanted.
func (h *heir) closeHandover() {
	if f := h.takeHandover(); f != nil {
		f.Close()
	}
}

func (h *heir) closeSockets() {
	for _, s := range h.socks {
		s.Close()
	}
}

// ready tells the old supervisor that this one serves.
func (h *heir) ready() { h.send(proto.Message{Kind: proto.Ready}) }

// fail tells the old supervisor why this one gives up.
func (h *heir) fail(err error) { h.send(proto.Message{Kind: proto.Failed, Text: err.Error()}) }

func (h *heir) send(m proto.Message) {
	if h == nil || h.status == nil {
		return
	}
	_ = proto.Write(h.status, m)
	h.status.Close()
	h.status = nil
}
