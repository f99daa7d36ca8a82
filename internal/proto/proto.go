// Package proto is the private protocol between a clusterflock supervisor and
// the workers it starts: the environment variable that makes a process a
// worker, the file-descriptor slots it inherits, and the line messages a
// worker writes back.
//
// A worker is started with:
//   - the environment variable [EnvWorker] =
//     "<supervisor pid>:<slot>:<generation>:<migration>:<addr>";
//   - fd 3 ([StatusFD]): the write end of the status pipe, on which the worker
//     writes [Message] lines (ready, heartbeat, failure);
//   - fd 4 ([LifelineFD]): the read end of the lifeline pipe, whose write end
//     only the supervisor holds. It reads EOF when the supervisor is gone.
package proto

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// EnvWorker is the environment variable that marks a process as a worker.
const EnvWorker = "CLUSTERFLOCK_WORKER"

// File-descriptor slots in a worker: os/exec's ExtraFiles slot i is fd 3+i.
const (
	StatusFD   = 3 // worker → supervisor messages (write end)
	LifelineFD = 4 // EOF when the supervisor dies (read end)
	ListenerFD = 5 // the listening socket, when the supervisor holds it (shared, or the slot's in a steered group)
	ControlFD  = 6 // a standby worker's activation: a unix socket carrying "<slot> <generation>\n" and, with a steered group, the slot's socket (SCM_RIGHTS)
)

// StandbySlot is the slot of a standby worker: started and initialised, it
// waits on ControlFD for its real slot before it listens.
const StandbySlot = -1

// WorkerEnv is what the supervisor tells a worker through [EnvWorker].
type WorkerEnv struct {
	SupervisorPID int
	Slot          int
	Generation    int
	Migration     string // the reuseport migration mechanism in force
	Addr          string // the concrete host:port every worker listens on
}

// Encode returns the value of [EnvWorker] for w.
func (w WorkerEnv) Encode() string {
	return fmt.Sprintf("%d:%d:%d:%s:%s", w.SupervisorPID, w.Slot, w.Generation, w.Migration, w.Addr)
}

// ParseWorkerEnv parses the value of [EnvWorker].
func ParseWorkerEnv(s string) (WorkerEnv, error) {
	parts := strings.SplitN(s, ":", 5)
	if len(parts) != 5 {
		return WorkerEnv{}, fmt.Errorf("malformed %s=%q", EnvWorker, s)
	}
	var w WorkerEnv
	var err error
	if w.SupervisorPID, err = strconv.Atoi(parts[0]); err != nil || w.SupervisorPID <= 0 {
		return WorkerEnv{}, fmt.Errorf("malformed %s=%q: bad supervisor pid", EnvWorker, s)
	}
	if w.Slot, err = strconv.Atoi(parts[1]); err != nil || w.Slot < StandbySlot {
		return WorkerEnv{}, fmt.Errorf("malformed %s=%q: bad slot", EnvWorker, s)
	}
	if w.Generation, err = strconv.Atoi(parts[2]); err != nil || w.Generation < 0 {
		return WorkerEnv{}, fmt.Errorf("malformed %s=%q: bad generation", EnvWorker, s)
	}
	w.Migration = parts[3]
	w.Addr = parts[4]
	if w.Addr == "" {
		return WorkerEnv{}, fmt.Errorf("malformed %s=%q: empty address", EnvWorker, s)
	}
	return w, nil
}

// Kind is the kind of a worker message.
type Kind string

// Message kinds.
const (
	Ready     Kind = "ready"     // the listener is bound and the worker serves
	Heartbeat Kind = "heartbeat" // the worker is alive and its event loop runs
	Failed    Kind = "failed"    // the worker cannot serve; Text says why
	Retiring  Kind = "retiring"  // the worker asks to be replaced (MaxRequests)
	Standby   Kind = "standby"   // a standby worker waits for its slot on ControlFD
)

// Message is one line a worker writes on its status pipe.
type Message struct {
	Kind Kind
	Text string
}

// Write writes m as one line to w. Newlines in Text are replaced by spaces.
func Write(w io.Writer, m Message) error {
	line := string(m.Kind)
	if m.Text != "" {
		line += " " + strings.ReplaceAll(m.Text, "\n", " ")
	}
	_, err := io.WriteString(w, line+"\n")
	return err
}

// ErrUnknown is returned by [Reader.Next] for a line it does not understand.
var ErrUnknown = errors.New("unknown worker message")

// Reader reads [Message] lines.
type Reader struct{ s *bufio.Scanner }

// NewReader returns a Reader of r.
func NewReader(r io.Reader) *Reader {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 512), 64<<10)
	return &Reader{s: s}
}

// Next returns the next message, or io.EOF at the end of the stream.
func (r *Reader) Next() (Message, error) {
	if !r.s.Scan() {
		if err := r.s.Err(); err != nil {
			return Message{}, err
		}
		return Message{}, io.EOF
	}
	kind, text, _ := strings.Cut(r.s.Text(), " ")
	m := Message{Kind: Kind(kind), Text: text}
	switch m.Kind {
	case Ready, Heartbeat, Failed, Retiring, Standby:
		return m, nil
	}
	return m, fmt.Errorf("%w: %q", ErrUnknown, r.s.Text())
}

// EnvUpgrade marks a process as the new supervisor of a binary upgrade:
// "<old supervisor pid>:<shared>:<socks>:<addr>". It inherits the write end
// of a pipe at [StatusFD] on which it writes a [Ready] message once its
// workers serve; if shared is 1, the pool's listening socket at
// [ListenerFD]; if socks is n > 0, the n sockets of a steered reuseport group
// at ListenerFD … ListenerFD+n-1, in the kernel's order.
const EnvUpgrade = "CLUSTERFLOCK_UPGRADE"

// UpgradeEnv is what an old supervisor tells its successor.
type UpgradeEnv struct {
	OldPID int
	Shared bool   // the pool's listener is inherited at ListenerFD
	Socks  int    // the number of steered group sockets inherited from ListenerFD on
	Addr   string // the concrete address the pool serves on
}

// Encode returns the value of [EnvUpgrade] for u.
func (u UpgradeEnv) Encode() string {
	shared := 0
	if u.Shared {
		shared = 1
	}
	return fmt.Sprintf("%d:%d:%d:%s", u.OldPID, shared, u.Socks, u.Addr)
}

// ParseUpgradeEnv parses the value of [EnvUpgrade].
func ParseUpgradeEnv(s string) (UpgradeEnv, error) {
	parts := strings.SplitN(s, ":", 4)
	if len(parts) != 4 {
		return UpgradeEnv{}, fmt.Errorf("malformed %s=%q", EnvUpgrade, s)
	}
	n, err := strconv.Atoi(parts[0])
	socks, serr := strconv.Atoi(parts[2])
	if err != nil || n <= 0 || (parts[1] != "0" && parts[1] != "1") || serr != nil || socks < 0 ||
		(socks > 0 && parts[1] == "1") || parts[3] == "" {
		return UpgradeEnv{}, fmt.Errorf("malformed %s=%q", EnvUpgrade, s)
	}
	return UpgradeEnv{OldPID: n, Shared: parts[1] == "1", Socks: socks, Addr: parts[3]}, nil
}
