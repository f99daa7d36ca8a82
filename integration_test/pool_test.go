//go:build linux

package integration_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

func TestFreshConnectionsReachSeveralWorkers(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2})
	seen := p.pidsServing(2, 10*time.Second)
	if len(seen) < 2 {
		t.Fatalf("fresh connections reached %d worker(s), want 2: %v", len(seen), seen)
	}
	for pid := range seen {
		if pid == strconv.Itoa(p.pid()) {
			t.Errorf("the supervisor (pid %s) served a request", pid)
		}
	}
}

func TestWorkerMarkerIsNotInherited(t *testing.T) {
	p := startPool(t, poolConfig{workers: 1})
	body, err := p.get("/env")
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		t.Errorf("CLUSTERFLOCK_WORKER in the handler's environment = %q, want it unset", body)
	}
}

func TestTTINAddsWorker(t *testing.T) {
	p := startPool(t, poolConfig{workers: 1})
	mark := p.mark()
	p.signal(syscall.SIGTTIN)
	p.waitEvent(mark, supervisor.EventReady, nil)
	if got := len(p.workerPids()); got != 2 {
		t.Fatalf("after TTIN the supervisor has %d children, want 2", got)
	}
	if seen := p.pidsServing(2, 10*time.Second); len(seen) != 2 {
		t.Fatalf("after TTIN fresh connections reached %v, want 2 workers", seen)
	}
}

func TestTTOURetiresOldest(t *testing.T) {
	p := startPool(t, poolConfig{workers: 3})
	ready := p.events(0, supervisor.EventReady)
	oldest := ready[0].Worker
	for _, r := range ready {
		if r.Worker.ID < oldest.ID {
			oldest = r.Worker
		}
	}
	mark := p.mark()
	p.signal(syscall.SIGTTOU)
	stop := p.waitEvent(mark, supervisor.EventStop, nil)
	if stop.Worker.Pid != oldest.Pid || stop.Reason != "retired" {
		t.Fatalf("TTOU stopped pid %d (%s), want the oldest worker, pid %d", stop.Worker.Pid, stop.Reason, oldest.Pid)
	}
	if exit := p.waitEvent(mark, supervisor.EventExit, nil); exit.Worker.Pid != oldest.Pid || !exit.clean() {
		t.Fatalf("exit after TTOU: pid %d %q (unexpected: %q), want pid %d exit status 0 on request", exit.Worker.Pid, exit.Status, exit.Reason, oldest.Pid)
	}
	waitGone(t, []int{oldest.Pid}, 5*time.Second)
	p.waitChildren(2, 10*time.Second)
	// Not reforked, and refused at one worker. (Signals of one kind sent
	// back to back may merge into one delivery: wait for each effect.)
	mark = p.mark()
	p.signal(syscall.SIGTTOU)
	if exit := p.waitEvent(mark, supervisor.EventExit, nil); exit.unexpected() {
		t.Fatalf("exit after the second TTOU: pid %d %s, unexpected: %s", exit.Worker.Pid, exit.Status, exit.Reason)
	}
	p.signal(syscall.SIGTTOU)
	p.waitEvent(mark, supervisor.EventRefused, func(e event) bool { return strings.Contains(e.Reason, "at least one worker") })
	p.waitChildren(1, 10*time.Second)
	if _, err := p.get("/"); err != nil {
		t.Fatalf("the last worker does not serve: %v", err)
	}
}

// TestGracefulStop: QUIT and TERM let an in-flight request finish, and the
// supervisor exits 0 as soon as the workers are gone.
func TestGracefulStop(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGQUIT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startPool(t, poolConfig{workers: 2, shutdown: 10 * time.Second})
			workers := p.workerPids()
			got := p.slowRequest(300)
			start := time.Now()
			p.signal(sig)
			if err := <-got; err != nil {
				t.Fatalf("in-flight request during %v: %v", sig, err)
			}
			code, runErr := p.wait(10 * time.Second)
			took := time.Since(start)
			if code != 0 || runErr != "" {
				t.Fatalf("after %v: exit code %d, Run error %q; want 0 and nil", sig, code, runErr)
			}
			t.Logf("graceful stop with one in-flight request (300 ms left) took %v", took.Round(time.Millisecond))
			waitGone(t, workers, 5*time.Second)
		})
	}
}

// TestGroupTERM: TERM to the whole process group (systemd, docker stop,
// Ctrl-C style delivery) still lets the in-flight request finish.
func TestGroupTERM(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2, shutdown: 10 * time.Second})
	workers := p.workerPids()
	got := p.slowRequest(300)
	if err := syscall.Kill(-p.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("in-flight request during group TERM: %v", err)
	}
	if code, runErr := p.wait(10 * time.Second); code != 0 || runErr != "" {
		t.Fatalf("after group TERM: exit code %d, Run error %q; want 0 and nil", code, runErr)
	}
	waitGone(t, workers, 5*time.Second)
	if n := len(p.events(0, supervisor.EventRefork)); n != 0 {
		t.Errorf("group TERM caused %d refork(s)", n)
	}
}

// TestIdleKeepAliveDoesNotDelayStop: an idle keep-alive connection is closed
// at once by a graceful stop, which does not wait for ShutdownTimeout.
func TestIdleKeepAliveDoesNotDelayStop(t *testing.T) {
	p := startPool(t, poolConfig{workers: 1, shutdown: time.Minute})
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.signal(syscall.SIGTERM)
	// The server closes the idle connection: the read sees EOF.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("idle keep-alive connection got data, want it closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("idle keep-alive connection was not closed by the graceful stop")
	}
	if code, runErr := p.wait(10 * time.Second); code != 0 || runErr != "" {
		t.Fatalf("exit code %d, Run error %q; want 0 and nil", code, runErr)
	}
}

// TestINTKillsAtOnce: INT does not wait for in-flight requests.
func TestINTKillsAtOnce(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2, shutdown: time.Minute})
	workers := p.workerPids()
	got := p.slowRequest(30000)
	p.signal(syscall.SIGINT)
	code, runErr := p.wait(10 * time.Second)
	if code == 0 || !strings.Contains(runErr, "SIGINT") {
		t.Fatalf("after INT: exit code %d, Run error %q; want non-zero and an error naming SIGINT", code, runErr)
	}
	if err := <-got; err == nil {
		t.Fatal("the in-flight request succeeded; INT should have killed its worker")
	}
	waitGone(t, workers, 5*time.Second)
	// Every worker was killed at once, and only for that.
	var killed []int
	for _, k := range p.events(0, supervisor.EventKill) {
		if k.Reason != "immediate stop" {
			t.Errorf("worker %d killed for %q, want \"immediate stop\"", k.Worker.Pid, k.Reason)
		}
		killed = append(killed, k.Worker.Pid)
	}
	if !sameSet(killed, workers) {
		t.Errorf("INT killed workers %v, want %v", killed, workers)
	}
}

// TestShutdownTimeoutKills: a request longer than ShutdownTimeout gets its
// worker killed, and Run says so.
func TestShutdownTimeoutKills(t *testing.T) {
	p := startPool(t, poolConfig{workers: 1, shutdown: 300 * time.Millisecond})
	workers := p.workerPids()
	p.slowRequest(30000)
	p.signal(syscall.SIGTERM)
	code, runErr := p.wait(10 * time.Second)
	if code == 0 || !strings.Contains(runErr, "ShutdownTimeout") || !strings.Contains(runErr, strconv.Itoa(workers[0])) {
		t.Fatalf("exit code %d, Run error %q; want non-zero and an error naming ShutdownTimeout and pid %d", code, runErr, workers[0])
	}
	waitGone(t, workers, 5*time.Second)
}

// TestRefork: a worker killed from outside is replaced at once.
func TestRefork(t *testing.T) {
	for _, how := range []string{"SIGKILL", "os.Exit in handler"} {
		t.Run(how, func(t *testing.T) {
			p := startPool(t, poolConfig{workers: 2})
			before := p.workerPids()
			victim := before[0]
			mark := p.mark()
			start := time.Now()
			if how == "SIGKILL" {
				if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			} else {
				// Whichever worker the request reaches exits; the
				// request itself fails.
				if _, err := p.get("/exit"); err == nil {
					t.Fatal("GET /exit succeeded")
				}
				victim = p.waitEvent(mark, supervisor.EventExit, event.unexpected).Worker.Pid
			}
			exit := p.waitEvent(mark, supervisor.EventExit, event.unexpected)
			if exit.Worker.Pid != victim {
				t.Fatalf("unexpected exit of pid %d, want %d", exit.Worker.Pid, victim)
			}
			wantStatus := "killed by signal KILL"
			if how != "SIGKILL" {
				wantStatus = "exit status 3"
			}
			if exit.Status != wantStatus {
				t.Errorf("exit status %q, want %q", exit.Status, wantStatus)
			}
			ready := p.waitEvent(mark, supervisor.EventReady, nil).Worker.Pid
			// The replacement serves.
			deadline := time.Now().Add(10 * time.Second)
			for {
				body, err := p.get("/")
				if err == nil && body == strconv.Itoa(ready) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("replacement pid %d never answered", ready)
				}
			}
			t.Logf("%s: worker %d replaced by %d, serving after %v", how, victim, ready, time.Since(start).Round(time.Millisecond))
			if got := p.workerPids(); len(got) != 2 || slices.Contains(got, victim) {
				t.Fatalf("children after refork = %v, want 2 without %d", got, victim)
			}
		})
	}
}

// TestNoOrphans: if the supervisor is SIGKILLed, its workers exit and the
// port is released.
func TestNoOrphans(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2})
	workers := p.workerPids()
	if err := syscall.Kill(p.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitGone(t, workers, 5*time.Second)
	t.Logf("workers gone %v after the supervisor's SIGKILL", time.Since(start).Round(time.Millisecond))
	// The port is free again: a program without SO_REUSEPORT can take it.
	// (Retried briefly: another program's client socket may hold the same
	// port number as its ephemeral port for a moment.)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", p.addr)
		if err == nil {
			ln.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("port still held 10s after the pool died: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// TestPortConflict: an address another program holds is reported at once,
// naming the address and the cause.
func TestPortConflict(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := startPool(t, poolConfig{addr: ln.Addr().String(), noWait: true})
	code, runErr := p.wait(10 * time.Second)
	if code == 0 || !strings.Contains(runErr, ln.Addr().String()) || !strings.Contains(runErr, "address already in use") {
		t.Fatalf("exit code %d, Run error %q; want non-zero, naming %s and \"address already in use\"", code, runErr, ln.Addr())
	}
	if n := len(p.events(0, supervisor.EventSpawn)); n != 0 {
		t.Errorf("%d worker(s) forked for an address in use", n)
	}
}

// TestNoForkStorm: workers that die before they are ready are retried with
// backoff, and Run gives up after a handful.
func TestNoForkStorm(t *testing.T) {
	p := startPool(t, poolConfig{mode: "exit-before-ready", workers: 2, noWait: true})
	p.addr = p.waitFor("supervisor starting", nil, 10*time.Second).str("addr")
	code, runErr := p.wait(20 * time.Second)
	if code == 0 || !strings.Contains(runErr, "before becoming ready") || !strings.Contains(runErr, p.addr) || !strings.Contains(runErr, "exit status 3") {
		t.Fatalf("exit code %d, Run error %q; want non-zero, naming %s and the workers' exit status 3", code, runErr, p.addr)
	}
	// The cause, as the worker wrote it on stderr, is in the error and in
	// each exit event.
	const said = `{"msg":"worker dies at start"}`
	if !strings.Contains(runErr, said) {
		t.Errorf("Run error %q does not say what the worker wrote on stderr (%s)", runErr, said)
	}
	for _, e := range p.events(0, supervisor.EventExit) {
		if e.Stderr != said {
			t.Errorf("exit event of worker %d: stderr %q, want %q", e.Worker.Pid, e.Stderr, said)
		}
	}
	spawns := len(p.events(0, supervisor.EventSpawn))
	if spawns > 6 {
		t.Errorf("%d forks before giving up; want at most 6", spawns)
	}
	reforks := p.events(0, supervisor.EventRefork)
	if len(reforks) == 0 || reforks[len(reforks)-1].Delay <= 0 {
		t.Errorf("reforks did not back off: %+v", reforks)
	}
}

func TestBadAddr(t *testing.T) {
	p := startPool(t, poolConfig{addr: "127.0.0.1:notaport", noWait: true})
	code, runErr := p.wait(10 * time.Second)
	if code == 0 || !strings.Contains(runErr, "Options.Addr") || !strings.Contains(runErr, "notaport") {
		t.Fatalf("exit code %d, Run error %q; want non-zero and an error naming Options.Addr and the value", code, runErr)
	}
}

// TestSpare: with Options.Spare a standby process waits beside the workers;
// a killed worker's slot goes to it (it only has to listen), a new standby
// follows, a rolling restart replaces the standby too, and nothing is left
// when the pool stops.
func TestSpare(t *testing.T) {
	// Auto, and cbpf, where the supervisor holds the slot's socket and
	// passes it to the standby on activation.
	for _, mig := range []string{"", "cbpf"} {
		t.Run("migration="+mig, func(t *testing.T) { testSpare(t, mig) })
	}
}

func testSpare(t *testing.T, mig string) {
	p := startPool(t, poolConfig{workers: 2, migration: mig, env: []string{envSpare + "=1"}})
	p.waitChildren(3, 10*time.Second) // 2 workers and the standby
	workers := map[int]bool{}
	for _, r := range p.events(0, supervisor.EventReady) {
		workers[r.Worker.Pid] = true
	}
	var standby int
	for _, c := range p.workerPids() {
		if !workers[c] {
			standby = c
		}
	}
	if standby == 0 {
		t.Fatalf("no standby among %v (workers %v)", p.workerPids(), workers)
	}
	// The standby serves nothing yet.
	if seen := p.pidsServing(3, 2*time.Second); seen[strconv.Itoa(standby)] != 0 {
		t.Fatalf("the standby %d answered a request before it was given a slot", standby)
	}
	mark := p.mark()
	start := time.Now()
	var victim int
	for c := range workers {
		victim = c
		break
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ready := p.waitEvent(mark, supervisor.EventReady, nil); ready.Worker.Pid != standby {
		t.Fatalf("the replacement of %d is %d, want the standby %d", victim, ready.Worker.Pid, standby)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if body, err := p.get("/"); err == nil && body == strconv.Itoa(standby) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the activated standby %d never answered", standby)
		}
	}
	t.Logf("worker %d killed; standby %d serving after %v", victim, standby, time.Since(start).Round(time.Millisecond))
	p.waitChildren(3, 10*time.Second) // a new standby

	mark = p.mark()
	p.signal(syscall.SIGHUP)
	if _, err := p.findEvent(mark, supervisor.EventRestart, func(e event) bool { return e.Reason == "done" }, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	p.waitChildren(3, 10*time.Second) // 2 new workers and a standby of their generation
	before := p.workerPids()
	p.signal(syscall.SIGTERM)
	if code, runErr := p.wait(10 * time.Second); code != 0 || runErr != "" {
		t.Fatalf("exit code %d, Run error %q", code, runErr)
	}
	waitGone(t, before, 5*time.Second)
}
