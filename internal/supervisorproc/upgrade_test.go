//go:build unix

package supervisorproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
)

// startFakeSuccessor starts sh with script as a new supervisor whose status
// pipe is fd 3, and watches it as the old supervisor does.
func startFakeSuccessor(t *testing.T, script string) (*successor, <-chan upgradeResult) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.ExtraFiles = []*os.File{w}
	own := &children{}
	if err := own.start(cmd); err != nil {
		t.Fatal(err)
	}
	w.Close()
	results := make(chan upgradeResult, 1)
	s := &successor{pid: cmd.Process.Pid, cmd: cmd, status: r, own: own}
	go s.watch(results)
	return s, results
}

func waitResult(t *testing.T, results <-chan upgradeResult) upgradeResult {
	t.Helper()
	select {
	case res := <-results:
		return res
	case <-time.After(10 * time.Second):
		t.Fatal("no upgrade result")
		return upgradeResult{}
	}
}

// "ready" from the new supervisor is a success; it is not waited for (it
// outlives the old one), so the test reaps it.
func TestUpgradeHandshakeReady(t *testing.T) {
	s, results := startFakeSuccessor(t, `echo ready >&3; exec sleep 0.2`)
	pid := s.pid
	res := waitResult(t, results)
	if res.err != nil || res.pid != pid {
		t.Fatalf("result %+v, want success of %d", res, pid)
	}
	if s.own.has(pid) {
		t.Error("a ready new supervisor is still counted as this supervisor's child")
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
}

// A new supervisor that exits before it is ready fails the upgrade with its
// own reason and exit status.
func TestUpgradeHandshakeFailed(t *testing.T) {
	s, results := startFakeSuccessor(t, `echo "failed clusterflock: cannot use Options.Addr" >&3; exit 3`)
	res := waitResult(t, results)
	want := fmt.Sprintf("new supervisor %d exited before its workers were ready: clusterflock: cannot use Options.Addr (exit status 3)", s.pid)
	if res.err == nil || res.err.Error() != want {
		t.Fatalf("result %v, want %q", res.err, want)
	}
}

// Garbage on the status pipe is no success.
func TestUpgradeHandshakeGarbage(t *testing.T) {
	_, results := startFakeSuccessor(t, `echo "readyish" >&3; echo >&3; exit 0`)
	if res := waitResult(t, results); res.err == nil {
		t.Fatal("a new supervisor that never said ready succeeded")
	}
}

// The new supervisor's side says ready, or why it failed, once.
func TestHeirSaysOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(h *heir)
		want proto.Message
	}{
		{"ready", func(h *heir) { h.ready(); h.fail(errors.New("late")); h.ready() }, proto.Message{Kind: proto.Ready}},
		{"failed", func(h *heir) { h.fail(errors.New("no\nway")); h.ready() }, proto.Message{Kind: proto.Failed, Text: "no way"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			tc.do(&heir{status: w})
			rd := proto.NewReader(r)
			if m, err := rd.Next(); err != nil || m != tc.want {
				t.Fatalf("first message %+v, %v; want %+v", m, err, tc.want)
			}
			if m, err := rd.Next(); err != io.EOF {
				t.Fatalf("then %+v, %v; want EOF", m, err)
			}
		})
	}
	var none *heir // not a binary upgrade: nothing to tell
	none.ready()
	none.fail(errors.New("x"))
}
