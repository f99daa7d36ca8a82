//go:build linux

package integration_test

// Issue 21, items 8 and 9: a pool's size survives a binary upgrade in every
// migration mode, and a control client that half-closes its connection
// after its request (socat, nc -N) hears the real outcome.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/control"
	"github.com/clusterflock/clusterflock/supervisor"
)

// sizeMechanisms are the migration modes a scaled pool is upgraded in: the
// storm's (root, net.ipv4.tcp_migrate_req 0) and the sysctl; the subtests
// of those this machine does not offer skip, saying why.
var sizeMechanisms = append(slices.Clone(stormModes), mechanism{name: "sysctl", migration: "sysctl", migrateReq: "1", want: "sysctl"})

// TestUpgradeKeepsScale: a pool scaled with TTIN (2 → 3 workers), or with
// TTOU (3 → 2), then upgraded with USR2, is as large after the upgrade as
// before, whatever the new supervisor's Options.Workers; the new
// supervisor's start line says where its size came from, and every one of
// its workers serves.
func TestUpgradeKeepsScale(t *testing.T) {
	for _, m := range sizeMechanisms {
		t.Run(m.name, func(t *testing.T) {
			m.setup(t)
			t.Run("TTIN", func(t *testing.T) { upgradeScaled(t, m, 2, syscall.SIGTTIN) })
			t.Run("TTOU", func(t *testing.T) { upgradeScaled(t, m, 3, syscall.SIGTTOU) })
		})
	}
}

// upgradeScaled starts a pool of workers (its Options.Workers, also the new
// supervisor's), scales it by one with sig, upgrades it and checks the new
// pool's size.
func upgradeScaled(t *testing.T, m mechanism, workers int, sig syscall.Signal) {
	p := m.start(t, poolConfig{workers: workers})
	want := workers + 1
	mark := p.mark()
	p.signal(sig)
	if sig == syscall.SIGTTIN {
		p.waitEvent(mark, supervisor.EventPoolReady, func(e event) bool { return e.Pool == want })
	} else {
		want = workers - 1
		stop := p.waitEvent(mark, supervisor.EventStop, func(e event) bool { return e.Reason == supervisor.ReasonRetired })
		p.waitCleanExit(mark, stop.Worker.Pid) // USR2 waits for a cbpf slot's drain
	}
	mark = p.mark()
	p.signal(syscall.SIGUSR2)
	newPid := p.waitUpgradeBegin(mark)
	if res := p.upgradeOutcome(mark); res.NewPid != newPid || res.Reason != "done" {
		t.Fatalf("upgrade to supervisor %d: %s (new supervisor %d)", newPid, res.Reason, res.NewPid)
	}
	start := p.waitFor("supervisor starting", func(r record) bool { return r.int("pid") == newPid }, time.Second)
	checkStart(t, start, m)
	if start.int("workers") != want || start.str("workers_from") != "upgrade" || start.int("options_workers") != workers {
		t.Errorf("new supervisor %d starts with workers=%s workers_from=%q options_workers=%s; want %d from %q, Options.Workers %d",
			newPid, start.str("workers"), start.str("workers_from"), start.str("options_workers"), want, "upgrade", workers)
	}
	ready := p.waitEvent(mark, supervisor.EventPoolReady, func(e event) bool { return e.Supervisor == newPid })
	if ready.Pool != want {
		t.Errorf("the new supervisor %d is ready with %d workers, want the old pool's %d (Options.Workers is %d)", newPid, ready.Pool, want, workers)
	}
	if code, runErr := p.wait(15 * time.Second); code != 0 || runErr != "" {
		t.Fatalf("old supervisor after the upgrade: exit code %d, Run error %q", code, runErr)
	}
	children := childrenOf(newPid)
	if len(children) != want {
		t.Fatalf("the new supervisor %d has children %v, want %d workers", newPid, children, want)
	}
	seen := p.pidsServing(want, 10*time.Second)
	for body := range seen {
		if pid, _ := strconv.Atoi(body); !slices.Contains(children, pid) {
			t.Errorf("pid %s answered, which is not a worker of the new supervisor %d %v", body, newPid, children)
		}
	}
	if len(seen) != want {
		t.Errorf("fresh connections reached %d workers of the new pool (%v), want all %d", len(seen), seen, want)
	}
}

// TestControlHalfClose: a client that sends a reload and shuts its side of
// the connection for writing (as socat and nc -N do at the end of their
// input) reads the reload's progress and its real outcome, and the reload
// has really replaced every worker. With a raw Unix connection, and with
// socat and OpenBSD netcat where they are installed.
func TestControlHalfClose(t *testing.T) {
	p, cl := controlPool(t, poolConfig{workers: 2})
	const reload = `{"v":1,"op":"reload"}` + "\n"
	t.Run("raw", func(t *testing.T) {
		before := p.workerPids()
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: cl.Path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, reload); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(c) // the server closes after the outcome
		if err != nil {
			t.Fatalf("reading the replies: %v (read %q)", err, out)
		}
		checkReloaded(t, p, before, out)
	})
	// The clients that half-close at the end of their input. socat's -t
	// is how long it still reads once its input has ended (0.5 s by
	// default, less than a reload may take).
	for _, tool := range []struct {
		name, flag string // the command, and the option it must have
		args       []string
	}{
		{"socat", "-t", []string{"-t", "30", "-", "UNIX-CONNECT:" + cl.Path}},
		{"nc", "-N", []string{"-N", "-U", cl.Path}}, // OpenBSD netcat
	} {
		t.Run(tool.name, func(t *testing.T) { halfCloseClient(t, p, tool.name, tool.flag, tool.args, reload) })
	}
}

// halfCloseClient runs a reload through the command-line client name with
// args, skipping the test if name is not installed or has not flag.
func halfCloseClient(t *testing.T, p *pool, name, flag string, args []string, req string) {
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("SKIP: %s is not installed: %v", name, err)
	}
	help, _ := exec.Command(name, "-h").CombinedOutput()
	if !bytes.Contains(help, []byte(flag)) {
		t.Skipf("SKIP: this %s has no %s option (it says: %.200s)", name, flag, help)
	}
	before := p.workerPids()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(req)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s (read %q)", name, err, stderr.Bytes(), out)
	}
	checkReloaded(t, p, before, out)
}

// checkReloaded checks a reload's replies, out: one progress line per
// worker, then the outcome, done and ok; and that no worker of before is
// left.
func checkReloaded(t *testing.T, p *pool, before []int, out []byte) {
	t.Helper()
	var replies []control.Reply
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r control.Reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("reply %q: %v", sc.Bytes(), err)
		}
		replies = append(replies, r)
	}
	if len(replies) == 0 {
		t.Fatal("no reply")
	}
	last := replies[len(replies)-1]
	if !last.Done || !last.OK || last.Error != "" {
		t.Fatalf("the reload's outcome after the half-close: %+v, want done and ok (replies %q)", last, out)
	}
	if len(replies) != len(before)+1 {
		t.Errorf("replies %q, want one progress line per worker, then the outcome", out)
	}
	for _, pid := range p.workerPids() {
		if slices.Contains(before, pid) {
			t.Errorf("worker %d of before the reload still runs (before %v)", pid, before)
		}
	}
}
