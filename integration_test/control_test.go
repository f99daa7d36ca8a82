//go:build linux

package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/control"
)

// controlPool starts a pool whose control socket is in a private temporary
// directory, and returns it with a client of that socket.
func controlPool(t *testing.T, c poolConfig) (*pool, *control.Client) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ctl")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pool.sock")
	c.env = append(c.env, envControl+"="+path)
	return startPool(t, c), &control.Client{Path: path}
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// Scale returns only once the pool has the size asked: the new workers
// serve, the retired ones have exited.
func TestControlScale(t *testing.T) {
	p, cl := controlPool(t, poolConfig{workers: 1})
	for _, n := range []int{4, 2, 1} {
		start := time.Now()
		if _, err := cl.Do(ctx(t), control.Request{Op: control.OpScale, N: n}, nil); err != nil {
			t.Fatalf("scale %d: %v", n, err)
		}
		took := time.Since(start)
		if got := len(p.workerPids()); got != n {
			t.Errorf("scale %d returned with %d worker processes", n, got)
		}
		st, err := cl.Status(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if st.Desired != n || st.Ready != n {
			t.Errorf("after scale %d: desired %d, ready %d", n, st.Desired, st.Ready)
		}
		t.Logf("scale %d took %v", n, took.Round(time.Millisecond))
	}
	_, err := cl.Do(ctx(t), control.Request{Op: control.OpRemove}, nil)
	if !errors.Is(err, control.ErrRefused) || !strings.Contains(err.Error(), "at least one worker") {
		t.Errorf("remove at one worker: %v, want refused (the pool keeps at least one worker)", err)
	}
}

// Reload returns only when every worker is new; one whose new workers cannot
// start fails with what they wrote on stderr, and the old workers serve on.
func TestControlReload(t *testing.T) {
	p, cl := controlPool(t, poolConfig{workers: 2})
	before := p.workerPids()
	var steps []string
	if _, err := cl.Do(ctx(t), control.Request{Op: control.OpReload}, func(r control.Reply) { steps = append(steps, r.Progress) }); err != nil {
		t.Fatalf("reload: %v", err)
	}
	after := p.workerPids()
	for _, pid := range after {
		if slices.Contains(before, pid) {
			t.Errorf("reload returned while worker %d of the old generation runs (before %v, after %v)", pid, before, after)
		}
	}
	if len(steps) != 2 {
		t.Errorf("reload progress %q, want one line per replaced worker", steps)
	}
}

func TestControlReloadFails(t *testing.T) {
	p, cl := controlPool(t, poolConfig{workers: 2, env: []string{envFailGeneration + "=1"}})
	before := p.workerPids()
	_, err := cl.Do(ctx(t), control.Request{Op: control.OpReload}, nil)
	if !errors.Is(err, control.ErrRefused) || !strings.Contains(err.Error(), "cannot open the database") {
		t.Fatalf("reload with new workers that cannot start: %v, want a failure naming their stderr line", err)
	}
	t.Logf("reload failed: %v", err)
	if got := p.pidsServing(2, 10*time.Second); len(got) != 2 {
		t.Errorf("after the failed reload the pool serves from %v, want the old workers %v", got, before)
	}
}

// Upgrade returns the new supervisor's pid, which then answers on the same
// socket.
func TestControlUpgrade(t *testing.T) {
	p, cl := controlPool(t, poolConfig{workers: 2})
	r, err := cl.Do(ctx(t), control.Request{Op: control.OpUpgrade}, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if r.NewPID == 0 || r.NewPID == p.pid() {
		t.Fatalf("upgrade returned new pid %d (old %d)", r.NewPID, p.pid())
	}
	p.alsoReap(r.NewPID)
	st, err := cl.Status(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != r.NewPID {
		t.Errorf("after the upgrade the socket answers for supervisor %d, want the new one %d", st.PID, r.NewPID)
	}
	if _, err := cl.Do(ctx(t), control.Request{Op: control.OpStop}, nil); err != nil {
		t.Errorf("stop of the new supervisor: %v", err)
	}
	waitGone(t, []int{r.NewPID}, 10*time.Second)
}

// flockctl: status -json matches /proc; usage errors exit 2, refusals 1,
// and stop returns once the pool has exited; another user is refused.
func TestFlockctl(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "flockctl")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/clusterflock/clusterflock/cmd/flockctl").CombinedOutput(); err != nil {
		t.Fatalf("go build flockctl: %v\n%s", err, out)
	}
	p, cl := controlPool(t, poolConfig{workers: 2})
	const requests = 20
	for range requests {
		if _, err := p.get("/"); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) (int, string, string) {
		cmd := exec.Command(bin, append([]string{"-s", cl.Path, "-timeout", "20s"}, args...)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), out.String(), errb.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, out.String(), errb.String()
	}
	// The requests served reach the status with the next heartbeats.
	var r control.Reply
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, out, _ := run("-json", "status")
		if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Status == nil {
			t.Fatalf("status -json: exit %d, %q", code, out)
		}
		served := int64(0)
		for _, w := range r.Status.Workers {
			served += w.Served
		}
		if served >= requests {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status says %d requests served, want at least %d", served, requests)
		}
		time.Sleep(100 * time.Millisecond) // polling for the next heartbeat
	}
	var pids []int
	for _, w := range r.Status.Workers {
		pids = append(pids, w.PID)
		if w.RSS <= 0 {
			t.Errorf("worker %d: RSS %d", w.PID, w.RSS)
		}
	}
	slices.Sort(pids)
	procs := p.workerPids()
	slices.Sort(procs)
	if r.Status.PID != p.pid() || !slices.Equal(pids, procs) {
		t.Errorf("status says supervisor %d with workers %v; /proc says %d with %v", r.Status.PID, pids, p.pid(), procs)
	}
	if code, _, stderr := run("scale", "0"); code != 2 {
		t.Errorf("scale 0: exit %d (%s), want 2", code, stderr)
	}
	if code, _, stderr := run("scale", "1"); code != 0 {
		t.Errorf("scale 1: exit %d (%s), want 0", code, stderr)
	}
	if code, _, stderr := run("remove"); code != 1 || !strings.Contains(stderr, "at least one worker") {
		t.Errorf("remove at one worker: exit %d (%s), want 1 with the reason", code, stderr)
	}
	other := exec.Command(bin, "-s", cl.Path, "status")
	other.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := other.CombinedOutput(); err == nil {
		t.Errorf("another user's flockctl status succeeded: %s", out)
	}
	if code, _, stderr := run("stop"); code != 0 {
		t.Errorf("stop: exit %d (%s)", code, stderr)
	}
	// stop answers with the pool's result as the supervisor returns from
	// Run; its workers are gone by then, and the process ends at once.
	if len(p.workerPids()) != 0 {
		t.Errorf("stop returned while workers %v still run", p.workerPids())
	}
	if code, runErr := p.wait(5 * time.Second); code != 0 {
		t.Errorf("after stop: exit %d, %s", code, runErr)
	}
}

// Garbage, a huge request and a truncated one get an error each (or a
// closed connection), and the pool answers the next client as before.
func TestControlGarbage(t *testing.T) {
	p, cl := controlPool(t, poolConfig{workers: 1})
	for _, in := range []string{"\x00\xff garbage\n", strings.Repeat("x", 2<<20) + "\n", `{"v":1,"op":"sta`, `{"v":9,"op":"status"}` + "\n"} {
		c, err := net.Dial("unix", cl.Path)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write([]byte(in))
			c.(*net.UnixConn).CloseWrite()
		}()
		reply, _ := io.ReadAll(c)
		c.Close()
		var r control.Reply
		if len(reply) > 0 && (json.Unmarshal(reply, &r) != nil || !r.Done || r.OK || r.Error == "") {
			t.Errorf("request %.20q: reply %q, want an error", in, reply)
		}
	}
	if st, err := cl.Status(ctx(t)); err != nil || st.PID != p.pid() {
		t.Fatalf("status after the garbage: %+v, %v", st, err)
	}
}

// Events streams the lifecycle events as they happen.
func TestControlEvents(t *testing.T) {
	_, cl := controlPool(t, poolConfig{workers: 1})
	evctx, cancel := context.WithCancel(ctx(t))
	kinds := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		_, err := cl.Do(evctx, control.Request{Op: control.OpEvents}, func(r control.Reply) {
			if r.Event != nil {
				kinds <- r.Event.Kind
			}
		})
		done <- err
	}()
	// The stream is subscribed once the server has read the request, which
	// the client cannot see: add a worker until one add's whole sequence
	// (spawn, ready, pool-ready) has come through (each add is bounded).
	var got []string
	for adds := 0; !containsInOrder(got, "spawn", "ready", "pool-ready"); adds++ {
		if adds == 5 {
			t.Fatalf("events seen after %d adds: %v; want spawn, ready and pool-ready", adds, got)
		}
		got = nil
		if _, err := cl.Do(ctx(t), control.Request{Op: control.OpAdd}, nil); err != nil {
			t.Fatal(err)
		}
		for more := true; more; {
			select {
			case k := <-kinds:
				got = append(got, k)
			case <-time.After(500 * time.Millisecond): // the add has returned: its events are sent
				more = false
			}
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("events after the client hung up: %v", err)
	}
}

// containsInOrder reports whether want occur in got in that order.
func containsInOrder(got []string, want ...string) bool {
	for _, g := range got {
		if len(want) > 0 && g == want[0] {
			want = want[1:]
		}
	}
	return len(want) == 0
}
