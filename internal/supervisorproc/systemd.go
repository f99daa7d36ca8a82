//go:build unix

package supervisorproc

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/clusterflock/clusterflock/internal/sdnotify"
	"golang.org/x/sys/unix"
)

// systemd tells systemd (Type=notify or notify-reload) what the pool does:
// READY=1 when every worker serves, RELOADING=1 during a rolling restart,
// STOPPING=1 on shutdown, STATUS= lines, MAINPID= after a binary upgrade,
// and WATCHDOG=1 while the supervisor's loop answers. Without NOTIFY_SOCKET
// it does nothing.
type systemd struct {
	n    notifier
	log  *slog.Logger
	addr string
	// handedOver is set once a binary upgrade's new supervisor is the
	// service's main process: this one then tells systemd nothing more (a
	// STOPPING=1 from it would stop the service).
	handedOver atomic.Bool
}

// notifier sends systemd notifications: an sdnotify.Notifier, or a fake.
type notifier interface {
	Enabled() bool
	Notify(state string) error
}

var _ notifier = sdnotify.Notifier{}

func (s *systemd) send(state string) {
	if err := s.n.Notify(state); err != nil {
		s.log.Warn("cannot notify systemd", "state", state, "err", err.Error())
	}
}

// on reports whether notifications are to be sent.
func (s *systemd) on() bool { return s.n.Enabled() && !s.handedOver.Load() }

// poolReady: every worker serves.
func (s *systemd) poolReady(n int) {
	if s.on() {
		s.send(fmt.Sprintf("READY=1\nSTATUS=%d workers serving on %s", n, s.addr))
	}
}

// restart: a rolling restart's phase, as supervisor.Hooks.Restart's.
func (s *systemd) restart(phase string) {
	switch {
	case !s.on():
	case phase == "begin":
		s.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=rolling restart", monotonicUsec()))
	case phase != "done": // done is followed by poolReady
		s.send("READY=1\nSTATUS=rolling restart " + phase)
	}
}

// stopping: the pool stops.
func (s *systemd) stopping(reason string) {
	if s.on() {
		s.send("STOPPING=1\nSTATUS=stopping (" + reason + ")")
	}
}

// mainPID tells systemd that pid is the service's main process now, and
// hands the notifications over to it.
func (s *systemd) mainPID(pid int) {
	s.send("MAINPID=" + strconv.Itoa(pid))
	s.handedOver.Store(true)
}

// watchdogInterval returns half of WATCHDOG_USEC, if systemd asks this
// process for keep-alives, or 0.
func watchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
