//go:build unix

package supervisorproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"

	"github.com/clusterflock/clusterflock/internal/sdnotify"
	"github.com/clusterflock/clusterflock/internal/sockets"
)

// choice is how the pool's listeners were chosen, for the start line.
type choice struct {
	why string // why a better mechanism is not in force, or how the source was chosen
	// noCBPF: classic BPF steering was tried and cannot be used here (so
	// the advice for migration none does not suggest it).
	noCBPF bool
}

// openListeners picks the pool's listeners: what a binary upgrade's old
// supervisor passed; the socket systemd passed (socket activation); off
// Linux or with migration shared, one listener every worker inherits; else
// a reservation of the address and the best (or the asked) migration, cbpf's
// steered group included.
func openListeners(cfg Config, h *heir) (listeners, choice, error) {
	if h != nil {
		lis, err := h.listeners(cfg)
		if err != nil || lis != nil {
			return lis, choice{why: inheritedWhy(lis)}, err
		}
	}
	if f, err := systemdListener(); err != nil || f != nil {
		if err != nil {
			return nil, choice{}, fmt.Errorf("clusterflock: socket activation: %w", err)
		}
		lis, err := activatedListener(f)
		return sharedOnly(cfg, lis, "socket activation (LISTEN_FDS); Options.Addr is not used", err)
	}
	if runtime.GOOS != "linux" || cfg.Migration == sockets.MigrationShared {
		why := "Options.Migration is \"shared\""
		if runtime.GOOS != "linux" {
			why = "no kernel-balanced SO_REUSEPORT on " + runtime.GOOS
		}
		lis, err := openShared(cfg.Addr)
		return sharedOnly(cfg, lis, why+": workers share one listener", err)
	}
	res, err := sockets.Reserve(cfg.Addr)
	if err != nil {
		return nil, choice{}, fmt.Errorf("clusterflock: cannot use Options.Addr %q: %w", cfg.Addr, err)
	}
	if h == nil { // in a binary upgrade the old supervisor's workers listen there
		if err := res.CheckFree(); err != nil {
			res.Close()
			return nil, choice{}, fmt.Errorf("clusterflock: cannot use Options.Addr %q: %w", cfg.Addr, err)
		}
	}
	lis, c, err := withMigration(cfg, res)
	if err != nil {
		res.Close()
	}
	return lis, c, err
}

// sharedOnly refuses a shared listener when Options.Migration names another
// mechanism.
func sharedOnly(cfg Config, lis listeners, why string, err error) (listeners, choice, error) {
	if err == nil && cfg.Migration != sockets.MigrationAuto && cfg.Migration != sockets.MigrationShared {
		lis.Close()
		return nil, choice{}, fmt.Errorf("clusterflock: Options.Migration %q does not apply: workers share one listener (%s)", cfg.Migration, why)
	}
	return lis, choice{why: why}, err
}

func inheritedWhy(lis listeners) string {
	if lis != nil && lis.migration() == sockets.MigrationCBPF {
		return "a steered group inherited from the old supervisor"
	}
	return "inherited from the old supervisor"
}

// withMigration returns the listeners on the reserved address for the
// migration asked, or the best available (auto).
func withMigration(cfg Config, res *sockets.Reservation) (listeners, choice, error) {
	mig, c := cfg.Migration, choice{}
	if mig == sockets.MigrationAuto {
		mig, c.why = sockets.DetectMigration()
		c.noCBPF = mig == sockets.MigrationNone
	} else if err := sockets.CheckMigration(mig); err != nil {
		return nil, c, fmt.Errorf("clusterflock: Options.Migration %q is not available here: %w", cfg.Migration, err)
	}
	if mig != sockets.MigrationCBPF {
		return &ownListeners{res: res, mig: mig}, c, nil
	}
	st, err := openSteered(res, cfg.Logger, cfg.Timing)
	switch {
	case err == nil:
		return st, c, nil
	case cfg.Migration == sockets.MigrationAuto:
		// Other listeners on the address (say, the workers of an old
		// supervisor that did not steer) make the order unknowable.
		c.why += "; classic BPF steering: " + err.Error()
		c.noCBPF = true
		return &ownListeners{res: res, mig: sockets.MigrationNone}, c, nil
	}
	return nil, c, fmt.Errorf("clusterflock: migration %q on %s: %w", sockets.MigrationCBPF, res.Addr(), err)
}

// openShared opens the one listener every worker inherits.
func openShared(addr string) (listeners, error) {
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("clusterflock: cannot use Options.Addr %q: %w", addr, err)
	}
	defer ln.Close()
	s, err := sockets.HoldListener(ln)
	if err != nil {
		return nil, fmt.Errorf("clusterflock: listener: %w", err)
	}
	return &sharedListener{sock: s, address: ln.Addr().String()}, nil
}

// activatedListener takes over the socket systemd passed.
func activatedListener(f *os.File) (listeners, error) {
	addr, err := listenerAddr(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("clusterflock: socket activation: fd 3: %w", err)
	}
	s, err := sockets.Adopt(f)
	if err != nil {
		return nil, fmt.Errorf("clusterflock: socket activation: fd 3: %w", err)
	}
	return &sharedListener{sock: s, address: addr}, nil
}

// systemdListener returns the socket systemd passed at fd 3, or nil when
// LISTEN_PID does not name this process. It removes the LISTEN_* variables
// so that workers and the handler's subprocesses do not see them.
func systemdListener() (*os.File, error) {
	active, err := sdnotify.ListenFDs(os.Getenv(sdnotify.EnvListenPID), os.Getenv(sdnotify.EnvListenFDs), os.Getpid())
	if !active {
		return nil, nil
	}
	for _, k := range []string{sdnotify.EnvListenPID, sdnotify.EnvListenFDs, sdnotify.EnvListenFDNames} {
		os.Unsetenv(k)
	}
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(3)
	return os.NewFile(3, "systemd-socket"), nil
}

// listenerAddr checks that f is a listening TCP socket and returns its address.
func listenerAddr(f *os.File) (string, error) {
	ln, err := net.FileListener(f) // a duplicate; f stays open
	if err != nil {
		return "", err
	}
	defer ln.Close()
	if _, ok := ln.(*net.TCPListener); !ok {
		return "", errors.New("not a TCP listening socket")
	}
	return ln.Addr().String(), nil
}
