// Package proto is the private protocol between a clusterflock supervisor and
// the workers it starts: the environment variable that makes a process a
// worker, the file-descriptor slots it inherits, and the line messages a
// worker writes back.
//
// A worker is started with:
//   - the environment variable [EnvWorker] =
//     "<supervisor pid>:<slot>:<generation>:<migration>:<listener>:<addr>",
//     where listener is "own" (the worker opens its own SO_REUSEPORT
//     listener) or "fd" (it inherits the supervisor's socket at [ListenerFD],
//     or a standby receives it on activation);
//   - fd 3 ([StatusFD]): the write end of the status pipe, on which the worker
//     writes [Message] lines (ready, heartbeat, failure);
//   - fd 4 ([LifelineFD]): the read end of the lifeline pipe, whose write end
//     only the supervisor holds. It reads EOF when the supervisor is gone.
package proto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
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
	// StderrFD is the supervisor's own stderr. Until it is ready a worker's
	// fd 2 is a pipe the supervisor reads (and passes on), so that it can
	// tell why a worker died at start; once ready, the worker moves
	// StderrFD to fd 2 and writes to it directly.
	StderrFD = 7
	// ImageFD is the binary the worker was executed from (O_PATH): the
	// supervisor executes /proc/self/fd/8, and the worker closes it at once.
	ImageFD = 8
	// MetricsFD is the worker's end of its metrics channel (a unix stream
	// socket) when [EnvMetrics] is set: the supervisor gathers the worker's
	// metrics over it (see package metrics).
	MetricsFD = 9
	// HandoverFD is, in a binary upgrade's new supervisor started with
	// [EnvHandover] set, its end of the channel on which the old supervisor
	// hands over its metrics totals and listener.
	HandoverFD = 4
)

// EnvMetrics, set to "1" in a worker, says that [MetricsFD] is its metrics
// channel; EnvHandover, set to "1" in a binary upgrade's new supervisor,
// says that [HandoverFD] is its metrics hand-over channel. Separate
// variables, so that the markers' formats stay those older builds parse.
const (
	EnvMetrics  = "CLUSTERFLOCK_METRICS"
	EnvHandover = "CLUSTERFLOCK_HANDOVER"
)

// EnvClosed, set to "1" in a worker, says that its supervisor reads
// [Closed] messages: the worker sends one once its listener is closed. A
// separate variable, so that a worker of this build sends none to an older
// supervisor (which would skip it) and a supervisor of this build knows
// that an older build's worker sends none.
const EnvClosed = "CLUSTERFLOCK_CLOSED"

// TakeFlag reports whether the environment variable name is "1", and
// removes it, so that the process's children do not inherit it.
func TakeFlag(name string) bool {
	v, ok := os.LookupEnv(name)
	os.Unsetenv(name)
	return ok && v == "1"
}

// StandbySlot is the slot of a standby worker: started and initialised, it
// waits on ControlFD for its real slot before it listens.
const StandbySlot = -1

// WorkerEnv is what the supervisor tells a worker through [EnvWorker].
type WorkerEnv struct {
	SupervisorPID int
	Slot          int
	Generation    int
	Migration     string // the migration mechanism in force
	Inherited     bool   // the listener is the supervisor's socket, not the worker's own
	Addr          string // the concrete host:port every worker listens on
}

// Encode returns the value of [EnvWorker] for w.
func (w WorkerEnv) Encode() string {
	ln := "own"
	if w.Inherited {
		ln = "fd"
	}
	return fmt.Sprintf("%d:%d:%d:%s:%s:%s", w.SupervisorPID, w.Slot, w.Generation, w.Migration, ln, w.Addr)
}

// ParseWorkerEnv parses the value of [EnvWorker].
func ParseWorkerEnv(s string) (WorkerEnv, error) {
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || (parts[4] != "own" && parts[4] != "fd") {
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
	w.Inherited = parts[4] == "fd"
	w.Addr = parts[5]
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
	Stuck     Kind = "stuck"     // the worker's requests make no progress (StuckTimeout); Text is its report
	Memory    Kind = "memory"    // the worker's RSS stays above MemoryLimit; Text says how much
	Closed    Kind = "closed"    // the worker's listener is closed (sent only with EnvClosed)
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

// WellFormedKind reports whether k looks like a message kind (a lowercase
// word of at most 32 letters, digits and dashes) even if this version does
// not know it: a newer worker's message, which an older supervisor skips
// (a rolling restart can run a newer binary under an older supervisor).
func WellFormedKind(k Kind) bool {
	if len(k) == 0 || len(k) > 32 || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for _, c := range []byte(k) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// ErrTooLong is returned by [Reader.Next] for a line over [MaxLine] bytes;
// the Reader reads no further.
var ErrTooLong = errors.New("worker message too long")

// MaxLine is the longest message line a [Reader] accepts, newline included.
const MaxLine = 64 << 10

// Reader reads [Message] lines.
type Reader struct {
	s   *bufio.Scanner
	err error // what ended the stream: Next returns it from then on
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader) *Reader {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 512), MaxLine)
	s.Split(scanLine)
	return &Reader{s: s}
}

// scanLine splits lines as [bufio.ScanLines] does, but keeps a '\r' before
// the '\n': a line is all that precedes its '\n', so that a message whose
// Text ends in '\r' reads back as [Write] wrote it.
func scanLine(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// Next returns the next message, or io.EOF at the end of the stream. An
// unknown line is an error wrapping [ErrUnknown] (the Reader goes on after
// it); a line over MaxLine one wrapping [ErrTooLong] (it does not). Any
// error but ErrUnknown ends the stream: Next returns it from then on (never,
// after ErrTooLong, a message made of the start of the line too long).
func (r *Reader) Next() (Message, error) {
	if r.err != nil {
		return Message{}, r.err
	}
	if !r.s.Scan() {
		r.err = r.s.Err()
		switch {
		case errors.Is(r.err, bufio.ErrTooLong):
			r.err = fmt.Errorf("%w: a line of more than %d bytes", ErrTooLong, MaxLine)
		case r.err == nil:
			r.err = io.EOF
		}
		return Message{}, r.err
	}
	kind, text, _ := strings.Cut(r.s.Text(), " ")
	m := Message{Kind: Kind(kind), Text: text}
	switch m.Kind {
	case Ready, Heartbeat, Failed, Retiring, Standby, Stuck, Memory, Closed:
		return m, nil
	}
	line := r.s.Text()
	if len(line) > 80 {
		line = line[:80] + "…"
	}
	return m, fmt.Errorf("%w: %q", ErrUnknown, line)
}

// LookupWorker reads [EnvWorker] from the environment. It reports false if
// the variable is unset, and an error if it is malformed or names another
// process than this one's parent (its supervisor died, or the variable was
// copied): such a process is neither a worker nor free to start a pool.
func LookupWorker() (WorkerEnv, bool, error) {
	v, ok := os.LookupEnv(EnvWorker)
	if !ok {
		return WorkerEnv{}, false, nil
	}
	w, err := ParseWorkerEnv(v)
	if err != nil {
		return WorkerEnv{}, true, err
	}
	if ppid := os.Getppid(); w.SupervisorPID != ppid {
		return WorkerEnv{}, true, fmt.Errorf("%s names supervisor %d, but this process's parent is %d (the supervisor is gone, or the variable was copied)", EnvWorker, w.SupervisorPID, ppid)
	}
	return w, true, nil
}

// LookupUpgrade reads [EnvUpgrade] as [LookupWorker] reads EnvWorker: the
// marker counts only if it names this process's parent.
func LookupUpgrade() (UpgradeEnv, bool, error) {
	v, ok := os.LookupEnv(EnvUpgrade)
	if !ok {
		return UpgradeEnv{}, false, nil
	}
	u, err := ParseUpgradeEnv(v)
	if err != nil {
		return UpgradeEnv{}, true, err
	}
	if ppid := os.Getppid(); u.OldPID != ppid {
		return UpgradeEnv{}, true, fmt.Errorf("%s names supervisor %d, but this process's parent is %d", EnvUpgrade, u.OldPID, ppid)
	}
	return u, true, nil
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

// EnvUpgradeWorkers, beside [EnvUpgrade], is the old supervisor's pool
// size: "<old supervisor pid>:<workers>", the workers it had asked for at
// the hand-over (Options.Workers, as TTIN, TTOU or a control socket's scale
// changed it since), which the new supervisor starts. A separate variable,
// so that EnvUpgrade's format stays the one older builds parse. An older
// build neither sets nor strips it: after a rollback to one, the variable
// it inherited stays in its environment and passes on to the next upgrade,
// stale. The PID ties the value to its sender: a new supervisor accepts it
// only if it names the supervisor that started it ([UpgradeWorkers]).
const EnvUpgradeWorkers = "CLUSTERFLOCK_UPGRADE_WORKERS"

// EncodeUpgradeWorkers returns the value of [EnvUpgradeWorkers] that the
// supervisor oldPID sets for a pool of n workers.
func EncodeUpgradeWorkers(oldPID, n int) string {
	return strconv.Itoa(oldPID) + ":" + strconv.Itoa(n)
}

// UpgradeWorkers parses s, the value of [EnvUpgradeWorkers], and returns
// its count of at least 1 if it was set by oldPID (the upgrade marker's,
// see [LookupUpgrade]) and that is this process's parent. Any other value
// (malformed, or left over from another supervisor by an older build that
// passed its environment on) is an error that says why.
func UpgradeWorkers(s string, oldPID int) (int, error) {
	pid, count, ok := strings.Cut(s, ":")
	p, perr := strconv.Atoi(pid)
	n, nerr := strconv.Atoi(count)
	if !ok || perr != nil || p <= 0 || nerr != nil || n < 1 {
		return 0, fmt.Errorf("malformed %s=%q: want <old supervisor pid>:<worker count of 1 or more>", EnvUpgradeWorkers, s)
	}
	if ppid := os.Getppid(); p != oldPID || p != ppid {
		return 0, fmt.Errorf("%s=%q was set by process %d, not by the old supervisor %d that started this one (parent %d): "+
			"a stale value an older build passed on", EnvUpgradeWorkers, s, p, oldPID, ppid)
	}
	return n, nil
}

// Activation is what the supervisor sends a standby worker on [ControlFD]:
// "<slot> <generation> <socket>\n", where socket is 1 if the slot's
// listening socket comes with the line (SCM_RIGHTS), else 0.
type Activation struct {
	Slot       int
	Generation int
	Socket     bool
}

// Encode returns the line for a.
func (a Activation) Encode() string {
	sock := 0
	if a.Socket {
		sock = 1
	}
	return fmt.Sprintf("%d %d %d\n", a.Slot, a.Generation, sock)
}

// ParseActivation parses an activation line.
func ParseActivation(line string) (Activation, error) {
	f := strings.Fields(line)
	if len(f) != 3 || !strings.HasSuffix(line, "\n") {
		return Activation{}, fmt.Errorf("malformed activation %q", line)
	}
	var a Activation
	var err1, err2 error
	a.Slot, err1 = strconv.Atoi(f[0])
	a.Generation, err2 = strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || a.Slot < 0 || a.Generation < 0 || (f[2] != "0" && f[2] != "1") {
		return Activation{}, fmt.Errorf("malformed activation %q", line)
	}
	a.Socket = f[2] == "1"
	return a, nil
}

// Load is what a heartbeat's text reports: "<served> <in flight>", the
// requests a worker has answered and is answering. A heartbeat without it
// (a Serve worker, an older one) reports nothing.
type Load struct {
	Served, InFlight int64
}

// Encode returns the heartbeat text for l.
func (l Load) Encode() string {
	return strconv.FormatInt(l.Served, 10) + " " + strconv.FormatInt(l.InFlight, 10)
}

// ParseLoad parses a heartbeat's text; ok is false if it says nothing
// well-formed.
func ParseLoad(text string) (Load, bool) {
	a, b, found := strings.Cut(text, " ")
	served, err1 := strconv.ParseInt(a, 10, 64)
	inFlight, err2 := strconv.ParseInt(b, 10, 64)
	if !found || err1 != nil || err2 != nil || served < 0 || inFlight < 0 {
		return Load{}, false
	}
	return Load{Served: served, InFlight: inFlight}, true
}

// IsInternal reports whether kv ("NAME=value", from os.Environ) is one of
// the pool's own variables between its processes, which a supervisor
// passes to neither a worker nor a new supervisor of its own making.
func IsInternal(kv string) bool {
	name, _, _ := strings.Cut(kv, "=")
	switch name {
	case EnvWorker, EnvUpgrade, EnvUpgradeWorkers, EnvMetrics, EnvHandover, EnvClosed:
		return true
	}
	return false
}
