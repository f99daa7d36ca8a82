package sockets

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Group is a reuseport group whose listening sockets this process opens and
// holds, so that it knows the kernel's order of them: a socket's index in the
// group is what a classic BPF program (SO_ATTACH_REUSEPORT_CBPF, which needs
// no privilege) returns to send a new connection to it.
//
// The kernel keeps a group's listening sockets in an array: listen() appends
// a socket, and a socket that stops listening is replaced by the last one.
// The Group mirrors that array exactly as long as (1) every listening socket
// on its address belongs to it, and (2) each of its sockets leaves the group
// only through [Group.Close], called when no other process still holds the
// socket. Other processes may accept on the sockets (they inherit them);
// they must not close the last reference or shut them down.
//
// Steering is what makes retirement lossless without privilege: [Group.Steer]
// sends new connections only to the sockets that have a worker accepting, so
// the socket of a worker about to leave receives none; once its accept queue
// is empty it can close without resetting a connection.
type Group struct {
	mu    sync.Mutex
	addr  string    // the concrete address once a socket listens
	socks []*Socket // the kernel's order: socks[i] is index i
	to    []*Socket // the last steering target set; empty: the kernel's hash
	// ghosts are sockets closed here that another process still held
	// then: they stay in socks, at their index, until sock_diag shows
	// they no longer listen.
	ghosts map[*Socket]bool
}

// NewGroup returns an empty group for addr ("host:port"; port 0 picks a free
// port on the first [Group.Listen]).
func NewGroup(addr string) (*Group, error) {
	if _, err := net.ResolveTCPAddr("tcp", addr); err != nil {
		return nil, err
	}
	return &Group{addr: addr}, nil
}

// AdoptGroup returns a group made of inherited listening sockets, given in
// the kernel's order (as [Group.Sockets] returned them in the process that
// passed them on).
func AdoptGroup(socks []*Socket) (*Group, error) {
	if len(socks) == 0 {
		return nil, errors.New("reuseport: no sockets to adopt")
	}
	g := &Group{socks: slices.Clone(socks)}
	for i, s := range socks {
		sa, err := s.Addr()
		if err != nil {
			return nil, fmt.Errorf("reuseport: inherited socket %d: %w", i, err)
		}
		if i == 0 {
			g.addr = sa
		} else if sa != g.addr {
			return nil, fmt.Errorf("reuseport: inherited socket %d listens on %s, socket 0 on %s", i, sa, g.addr)
		}
	}
	return g, nil
}

// Addr returns the group's address: after the first Listen, with the
// concrete port.
func (g *Group) Addr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.addr
}

// Len returns the number of sockets in the group.
func (g *Group) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.socks)
}

// Sockets returns the group's sockets in the kernel's order. They stay owned
// by the group.
func (g *Group) Sockets() []*Socket {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.socks)
}

// Listen opens a new listening socket in the group (plain TCP, SO_REUSEPORT,
// close-on-exec) and returns it; the group owns it until [Group.Close].
//
// The socket is bound first and joins the kernel's group only when it
// listens; before that, Listen checks (with sock_diag, if available) that
// the group's sockets are all that listen on the address, and fails
// otherwise: another process's socket in the group would make the order
// unknowable. Checking before listening costs no connection.
func (g *Group) Listen() (*Socket, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reconcileLocked()
	fd, addr, err := bindTCP(g.addr, true)
	if err != nil {
		return nil, err
	}
	s := newSocket(fd)
	if err := checkListeners(s, g.socks, g.addr); err != nil {
		s.Close()
		return nil, err
	}
	if len(g.ghosts) > 0 {
		// A ghost that leaves after this socket joins would move it.
		s.Close()
		return nil, fmt.Errorf("reuseport: %d closed socket(s) of the group on %s are still held by another process", len(g.ghosts), g.addr)
	}
	if err := unix.Listen(fd, listenBacklog()); err != nil {
		s.Close()
		return nil, fmt.Errorf("reuseport: listen %s: %w", addr, err)
	}
	if len(g.socks) == 0 {
		g.addr = addr
	}
	g.socks = append(g.socks, s)
	// A new socket gets no connections from the current program (it returns
	// the old indices) until the next Steer; under the kernel's hash it does.
	return s, nil
}

// listenBacklog is the kernel's limit, as Go's listeners use it
// (net.maxListenerBacklog: the kernel keeps it in 32 bits since Linux 4.1,
// and classic BPF steering needs Linux 4.6).
func listenBacklog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return unix.SOMAXCONN
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return unix.SOMAXCONN
	}
	return min(n, 1<<31-1)
}

// Verify checks, with sock_diag, that the sockets listening on the group's
// address are exactly the group's: the order it keeps is the kernel's only
// then. It returns nil if sock_diag cannot tell.
func (g *Group) Verify() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.verifyLocked()
}

func (g *Group) verifyLocked() error {
	g.reconcileLocked()
	for _, s := range g.socks {
		if !g.ghosts[s] {
			return checkListeners(s, g.socks, g.addr)
		}
	}
	return nil
}

// Held returns how many sockets closed here are still in the group because
// another process holds them.
func (g *Group) Held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reconcileLocked()
	return len(g.ghosts)
}

// checkListeners checks that the sockets listening on at's address are
// exactly socks (at may be one of them, or bound and not listening).
func checkListeners(at *Socket, socks []*Socket, addr string) error {
	ok, others, err := sameSockets(at, socks)
	switch {
	case err != nil:
		return fmt.Errorf("reuseport: cannot check the group's sockets: %w", err)
	case others > 0:
		return fmt.Errorf("reuseport: %d other socket(s) listen on %s: a steered group must hold every listening socket of its address", others, addr)
	case !ok:
		return fmt.Errorf("reuseport: some of the group's sockets on %s no longer listen", addr)
	}
	return nil
}

// Close closes f, one of the group's sockets, and updates the order as the
// kernel does: the last socket takes f's index. The caller guarantees that no
// other process holds f any more (its workers have exited), so that the
// socket leaves the group exactly now. Steering is re-applied for the new
// order.
//
// If sock_diag shows f still listening after the close, another process
// holds it: f then stays in the order, never a target, until a later call
// finds it gone, and Close reports [ErrStillHeld].
func (g *Group) Close(f *Socket) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reconcileLocked()
	i := slices.Index(g.socks, f)
	if i < 0 || g.ghosts[f] {
		return errors.New("reuseport: Close of a socket not in the group")
	}
	last := len(g.socks) - 1
	want := slices.DeleteFunc(slices.Clone(g.to), func(s *Socket) bool { return s == f })
	var err error
	if len(g.to) > 0 && i != last {
		// The close moves the last socket to index i. Until the program
		// is replaced after it, steer only to sockets whose index does
		// not change (if there are any): neither f nor the last one.
		var stable []*Socket
		for _, s := range g.to {
			if s != f && s != g.socks[last] {
				stable = append(stable, s)
			}
		}
		if len(stable) > 0 {
			err = g.steerLocked(stable)
		}
	}
	var at *Socket // an open socket of the group, to ask sock_diag about its address
	for _, s := range g.socks {
		if s != f && !g.ghosts[s] {
			at = s
			break
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if at != nil && stillListens(at, f) {
		if g.ghosts == nil {
			g.ghosts = map[*Socket]bool{}
		}
		g.ghosts[f] = true
		if len(g.to) > 0 {
			g.steerLocked(want)
		}
		return ErrStillHeld
	}
	g.socks[i] = g.socks[last]
	g.socks = g.socks[:last]
	if len(g.to) > 0 {
		if serr := g.steerLocked(want); err == nil {
			err = serr
		}
	}
	return err
}

// ErrStillHeld is returned by [Group.Close] when another process still held
// the socket: it left the group's targets, and leaves its order once it no
// longer listens.
var ErrStillHeld = errors.New("reuseport: the closed socket is still held by another process")

// reconcileLocked drops the ghosts that no longer listen, as the kernel did
// when their last holder closed them (no change of this group's came in
// between: every change begins here).
func (g *Group) reconcileLocked() {
	if len(g.ghosts) == 0 {
		return
	}
	var at *Socket
	for _, s := range g.socks {
		if !g.ghosts[s] {
			at = s
			break
		}
	}
	for _, ghost := range slices.Clone(g.socks) {
		if !g.ghosts[ghost] || (at != nil && stillListens(at, ghost)) {
			continue
		}
		i := slices.Index(g.socks, ghost)
		last := len(g.socks) - 1
		g.socks[i] = g.socks[last]
		g.socks = g.socks[:last]
		delete(g.ghosts, ghost)
	}
}

// CloseAll closes every socket of the group (the pool stops). Sockets that
// other processes still hold leave the group when those close them.
func (g *Group) CloseAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.socks {
		f.Close()
	}
	g.socks, g.to, g.ghosts = nil, nil, nil
}

// Steer attaches a classic BPF program to the group that sends each new
// connection to one of the sockets in to, chosen at random (it runs once per
// SYN, so the choice holds for the connection's life). Sockets outside the
// Group (another process's, at the end of the kernel's array) get none. If to
// is empty (there is nowhere better) the program defers to the kernel's hash
// over every socket.
func (g *Group) Steer(to []*Socket) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reconcileLocked()
	return g.steerLocked(to)
}

func (g *Group) steerLocked(to []*Socket) error {
	if len(g.socks) == 0 {
		g.to = nil
		return nil
	}
	var idx []uint32
	for i, f := range g.socks {
		if slices.Contains(to, f) {
			idx = append(idx, uint32(i))
		}
	}
	g.to = slices.Clone(to)
	prog := steerProgram(idx)
	err := g.socks[0].control(func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
	if err != nil {
		return fmt.Errorf("setsockopt SO_ATTACH_REUSEPORT_CBPF: %w", err)
	}
	return nil
}

// Index returns f's index in the group, or -1.
func (g *Group) Index(f *Socket) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Index(g.socks, f)
}

// AcceptQueue returns the number of connections waiting in the socket's
// accept queue.
func (s *Socket) AcceptQueue() (int, error) {
	var info *unix.TCPInfo
	if err := s.control(func(fd int) (err error) {
		info, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err
	}); err != nil {
		return 0, fmt.Errorf("getsockopt TCP_INFO: %w", err)
	}
	if info.State != unix.BPF_TCP_LISTEN {
		return 0, errors.New("not a listening socket")
	}
	return int(info.Unacked), nil // for a listener: the accept queue's length
}

// steerProgram returns a classic BPF program for a reuseport group that
// returns one of idx at random, or, if idx is empty, an index past the group
// (which makes the kernel use its hash).
func steerProgram(idx []uint32) []unix.SockFilter {
	const (
		ldRandom = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		modK     = unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K
		jeqK     = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK     = unix.BPF_RET | unix.BPF_K
		hash     = 0xffffffff
		// SKF_AD_OFF + SKF_AD_RANDOM (linux/filter.h): a random u32.
		random = 0xfffff000 + 56
	)
	if len(idx) == 0 {
		return []unix.SockFilter{{Code: retK, K: hash}}
	}
	if len(idx) == 1 {
		return []unix.SockFilter{{Code: retK, K: idx[0]}}
	}
	prog := []unix.SockFilter{
		{Code: ldRandom, K: random},
		{Code: modK, K: uint32(len(idx))},
	}
	for j, i := range idx[:len(idx)-1] {
		prog = append(prog,
			unix.SockFilter{Code: jeqK, K: uint32(j), Jt: 0, Jf: 1},
			unix.SockFilter{Code: retK, K: i})
	}
	return append(prog, unix.SockFilter{Code: retK, K: idx[len(idx)-1]})
}

// CheckSteering reports whether classic BPF steering works here: it attaches
// a program to a throwaway listening socket on 127.0.0.1.
func CheckSteering() error {
	g, err := NewGroup("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer g.CloseAll()
	f, err := g.Listen()
	if err != nil {
		return err
	}
	if err := g.Steer([]*Socket{f}); err != nil {
		return err
	}
	return nil
}
