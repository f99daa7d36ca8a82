//go:build unix

package workerproc

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/clusterflock/clusterflock/internal/proto"
	"golang.org/x/sys/unix"
)

// activation is what a standby worker reads on its ControlFD.
type activation struct {
	line      string   // proto.Activation's encoding
	ln        *os.File // the slot's socket, if one came with it
	truncated bool     // a descriptor was sent but did not fit (EMFILE)
}

// awaitActivation is a standby worker's wait (Options.Spare): it reports
// that it stands by, then reads its slot and generation from ControlFD, with
// the slot's socket if the supervisor holds one per slot. It reports false
// if it is not to serve: the supervisor closed its end (a new generation, or
// the pool stops), is gone, or sent TERM or QUIT.
func awaitActivation(env proto.WorkerEnv, status *statusWriter, sigs <-chan os.Signal, orphaned <-chan struct{}) (proto.WorkerEnv, *os.File, bool, error) {
	syscall.CloseOnExec(proto.ControlFD)
	got := make(chan activation, 1)
	// If the standby is not activated, this read stays blocked until the
	// process exits, which it does once Run returns.
	go func() { got <- readActivation(proto.ControlFD) }()
	status.send(proto.Message{Kind: proto.Standby})
	for {
		select {
		case a := <-got:
			return activated(env, a)
		case sig := <-sigs:
			if sig == syscall.SIGTERM || sig == syscall.SIGQUIT {
				return env, nil, false, nil
			}
		case <-orphaned:
			return env, nil, false, nil
		}
	}
}

// activated checks an activation: the slot to serve, and its socket if the
// supervisor said it sends one.
func activated(env proto.WorkerEnv, a activation) (proto.WorkerEnv, *os.File, bool, error) {
	act, err := proto.ParseActivation(a.line)
	if err != nil { // the supervisor closed its end: not to serve
		if a.ln != nil {
			a.ln.Close()
		}
		return env, nil, false, nil
	}
	env.Slot, env.Generation = act.Slot, act.Generation
	if act.Socket && a.ln == nil {
		why := "the activation carried no listening socket"
		if a.truncated {
			why += " (it did not fit: too many open files?)"
		}
		return env, nil, false, errors.New(why)
	}
	if !act.Socket && a.ln != nil {
		a.ln.Close()
		return env, nil, false, fmt.Errorf("the activation carried a socket it did not announce")
	}
	return env, a.ln, true, nil
}

// readActivation reads one activation line from fd, keeping the first
// descriptor that comes with it, then closes fd.
func readActivation(fd int) activation {
	var a activation
	buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
	for !strings.HasSuffix(a.line, "\n") && len(a.line) < 256 {
		n, oobn, flags, _, err := unix.Recvmsg(fd, buf, oob, recvFlags)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			break
		}
		if flags&unix.MSG_CTRUNC != 0 {
			a.truncated = true
		}
		a.line += string(buf[:n])
		for _, rfd := range rights(oob[:oobn]) {
			unix.CloseOnExec(rfd) // nothing forks before activation
			if a.ln == nil {
				a.ln = os.NewFile(uintptr(rfd), "clusterflock-listener")
			} else {
				unix.Close(rfd)
			}
		}
	}
	unix.Close(fd)
	return a
}

// rights returns the descriptors in a control message.
func rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}
