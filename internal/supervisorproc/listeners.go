//go:build unix

package supervisorproc

import (
	"io"
	"os"

	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/supervisor"
)

// listeners owns where a pool's workers get their listening sockets; there
// is one implementation per mode:
//   - [ownListeners] (migration ebpf, sysctl, none): each worker opens its own
//     SO_REUSEPORT listener; the supervisor only reserves the port;
//   - [sharedListener] (migration shared, socket activation, non-Linux): one
//     socket the supervisor holds and every worker inherits;
//   - [steered] (migration cbpf): a socket per slot the supervisor holds in a
//     steered reuseport group.
//
// The supervisor drives it explicitly: the spawner asks for a slot's
// listener and reports the worker it started; the supervisor's hooks report
// a worker ready, stopping or exited, a slot leaving (the channel returned
// is closed once the slot has drained: its worker is asked to stop only
// then), the pool ready or stopping; the dispatcher asks it whether a
// request may change the pool now and hands its sockets to a binary
// upgrade. Calls come from the supervisor's goroutine and the
// dispatcher's.
type listeners interface {
	addr() string // the concrete address
	migration() sockets.Migration
	// inherited reports whether workers inherit their listener from the
	// supervisor (else each opens its own).
	inherited() bool
	// listener returns a duplicate of the socket a worker of slot (or a
	// standby, slot proto.StandbySlot) inherits, which the caller closes
	// once the worker has started; nil if it gets none now.
	listener(slot int) (*os.File, error)
	spawned(w supervisor.Worker)
	ready(w supervisor.Worker)
	stopping(w supervisor.Worker)
	exited(w supervisor.Worker)
	leaving(slot int) <-chan struct{}
	poolReady()
	poolStopping()
	// refuse says why the request of sig may not change the pool now, or "".
	refuse(req string) string
	// handOver returns the sockets a binary upgrade's new supervisor
	// inherits, in order, or why not now; it keeps them unchanged until
	// upgradeFailed.
	handOver() (socks []*sockets.Socket, busy string)
	// upgradeFailed: the new supervisor that was handed the sockets did not
	// start, or exited (started) before it was ready.
	upgradeFailed(started bool)
	io.Closer
}

// Requests that change the pool, as listeners.refuse names them.
const (
	reqAdd    = "TTIN"
	reqRetire = "TTOU"
)

// unsteered is the part of listeners that only a steered group needs.
type unsteered struct{}

func (unsteered) spawned(supervisor.Worker)   {}
func (unsteered) ready(supervisor.Worker)     {}
func (unsteered) stopping(supervisor.Worker)  {}
func (unsteered) exited(supervisor.Worker)    {}
func (unsteered) leaving(int) <-chan struct{} { return nil }
func (unsteered) poolReady()                  {}
func (unsteered) poolStopping()               {}
func (unsteered) refuse(string) string        { return "" }
func (unsteered) upgradeFailed(bool)          {}

// ownListeners: each worker opens its own SO_REUSEPORT listener; the
// supervisor holds the port with a reservation between re-forks.
type ownListeners struct {
	unsteered
	res *sockets.Reservation
	mig sockets.Migration
}

func (o *ownListeners) addr() string                          { return o.res.Addr() }
func (o *ownListeners) migration() sockets.Migration          { return o.mig }
func (o *ownListeners) inherited() bool                       { return false }
func (o *ownListeners) listener(int) (*os.File, error)        { return nil, nil }
func (o *ownListeners) handOver() ([]*sockets.Socket, string) { return nil, "" }
func (o *ownListeners) Close() error                          { return o.res.Close() }

// sharedListener: one listening socket every worker inherits.
type sharedListener struct {
	unsteered
	sock    *sockets.Socket
	address string
}

func (s *sharedListener) addr() string                          { return s.address }
func (s *sharedListener) migration() sockets.Migration          { return sockets.MigrationShared }
func (s *sharedListener) inherited() bool                       { return true }
func (s *sharedListener) listener(int) (*os.File, error)        { return s.sock.File() }
func (s *sharedListener) handOver() ([]*sockets.Socket, string) { return []*sockets.Socket{s.sock}, "" }
func (s *sharedListener) Close() error                          { return s.sock.Close() }
