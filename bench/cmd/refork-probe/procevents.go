//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The kernel's process events connector (linux/cn_proc.h): with it the probe
// sees, stamped by the kernel on CLOCK_MONOTONIC, when the supervisor forks
// and when the child's execve completes, without tracing anything. It needs
// CAP_NET_ADMIN (root).
const (
	cnIdxProc         = 1 // CN_IDX_PROC
	cnValProc         = 1 // CN_VAL_PROC
	procCnMcastListen = 1 // PROC_CN_MCAST_LISTEN
	procEventFork     = 0x00000001
	procEventExec     = 0x00000002
	nlmsgHdrLen       = 16
	cnMsgHdrLen       = 20
)

// procTimes are the kernel's stamps for one process (0: not seen).
type procTimes struct {
	fork, exec int64 // CLOCK_MONOTONIC ns
	parent     int   // the forking process
}

// procEvents records fork and exec of processes (not threads).
type procEvents struct {
	fd int
	mu sync.Mutex
	by map[int]*procTimes
}

// listenProcEvents subscribes to the connector; nil and why if it cannot.
func listenProcEvents() (*procEvents, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("netlink connector socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc, Pid: uint32(os.Getpid())}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind to the proc connector: %w", err)
	}
	msg := make([]byte, nlmsgHdrLen+cnMsgHdrLen+4)
	le := binary.LittleEndian
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint16(msg[4:], unix.NLMSG_DONE)
	le.PutUint32(msg[12:], uint32(os.Getpid()))
	le.PutUint32(msg[16:], cnIdxProc)
	le.PutUint32(msg[20:], cnValProc)
	le.PutUint16(msg[32:], 4)
	le.PutUint32(msg[36:], procCnMcastListen)
	if err := unix.Send(fd, msg, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("subscribe to process events: %w", err)
	}
	p := &procEvents{fd: fd, by: map[int]*procTimes{}}
	go p.read()
	return p, nil
}

// read records events for as long as the probe runs.
func (p *procEvents) read() {
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			if err == unix.EINTR || err == unix.ENOBUFS {
				continue
			}
			return
		}
		for b := buf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(binary.LittleEndian.Uint32(b))
			if l < nlmsgHdrLen || l > len(b) {
				break
			}
			p.event(b[nlmsgHdrLen+cnMsgHdrLen : l])
			b = b[(l+3)&^3:]
		}
	}
}

// event records one struct proc_event: what, cpu, timestamp_ns, then the
// event's pids.
func (p *procEvents) event(ev []byte) {
	if len(ev) < 32 {
		return
	}
	le := binary.LittleEndian
	what, ts := le.Uint32(ev[0:]), int64(le.Uint64(ev[8:]))
	d := ev[16:]
	p.mu.Lock()
	defer p.mu.Unlock()
	switch what {
	case procEventFork: // parent_pid, parent_tgid, child_pid, child_tgid
		if child := int(le.Uint32(d[8:])); child == int(le.Uint32(d[12:])) {
			p.get(child).fork, p.get(child).parent = ts, int(le.Uint32(d[4:]))
		}
	case procEventExec: // process_pid, process_tgid
		if pid := int(le.Uint32(d[0:])); pid == int(le.Uint32(d[4:])) {
			p.get(pid).exec = ts
		}
	}
}

func (p *procEvents) get(pid int) *procTimes {
	t := p.by[pid]
	if t == nil {
		t = &procTimes{}
		p.by[pid] = t
	}
	return t
}

// times returns what was seen of pid.
func (p *procEvents) times(pid int) procTimes {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.by[pid]; t != nil {
		return *t
	}
	return procTimes{}
}
