//go:build linux

package integration_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
	"github.com/google/go-cmp/cmp"
)

// selfSignedTLS returns a TLS config with a fresh self-signed certificate.
func selfSignedTLS() *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestServeAnyTCPServer: Serve runs a non-HTTP server in every worker, and
// a graceful stop ends it cleanly.
func TestServeAnyTCPServer(t *testing.T) {
	p := startPool(t, poolConfig{mode: "tcp", workers: 2})
	pids := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(pids) < 2 && time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "hello\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		pid, rest, _ := strings.Cut(strings.TrimSpace(line), ": ")
		if rest != "hello" {
			t.Fatalf("echo answered %q", line)
		}
		pids[pid] = true
	}
	if len(pids) < 2 {
		t.Fatalf("fresh connections reached %v, want 2 workers", pids)
	}
	p.signal(syscall.SIGTERM)
	if code, runErr := p.wait(10 * time.Second); code != 0 || runErr != "" {
		t.Fatalf("exit code %d, Run error %q; want 0 and nil", code, runErr)
	}
}

// TestServerTemplateTLS: Options.Server's TLSConfig makes workers serve HTTPS.
func TestServerTemplateTLS(t *testing.T) {
	p := startPool(t, poolConfig{mode: "tls", workers: 1})
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the helper's certificate is self-signed
		ForceAttemptHTTP2: true,
	}}
	resp, err := c.Get("https://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.TLS == nil || resp.StatusCode != 200 {
		t.Fatalf("GET https://…/: TLS %v, status %s", resp.TLS != nil, resp.Status)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s over TLS, want HTTP/2", resp.Proto)
	}
}

// TestWorkerFromContext: a handler learns its worker's slot, generation, PID.
func TestWorkerFromContext(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2})
	body, err := p.get("/whoami")
	if err != nil {
		t.Fatal(err)
	}
	var ok bool
	var slot, gen, pid int
	if _, err := fmt.Sscan(body, &ok, &slot, &gen, &pid); err != nil {
		t.Fatalf("/whoami = %q: %v", body, err)
	}
	if !ok || slot < 0 || slot > 1 || gen != 0 || pid <= 0 || pid == p.pid() {
		t.Fatalf("/whoami = %q: want ok, slot 0 or 1, generation 0, a worker's pid", body)
	}
}

// TestOnEventAndWorkerTable: Options.OnEvent sees lifecycle events, with
// their workers, and SIGUSR1 logs the worker table.
func TestOnEventAndWorkerTable(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2}) // it waited for the pool-ready event
	evs := p.events(0, "")
	var kinds []supervisor.EventKind
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	want := []supervisor.EventKind{supervisor.EventSpawn, supervisor.EventSpawn, supervisor.EventReady, supervisor.EventReady, supervisor.EventPoolReady}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Fatalf("OnEvent kinds at start (-want +got):\n%s", diff)
	}
	workers := p.workerPids()
	for i, e := range evs {
		if e.Supervisor != p.pid() {
			t.Errorf("event %d %s reported by pid %d, want the supervisor %d", i, e.Kind, e.Supervisor, p.pid())
		}
		if e.Kind == supervisor.EventPoolReady {
			if e.Pool != 2 || e.Worker.ID != 0 {
				t.Errorf("pool-ready event %+v: want Pool 2 and no worker", e)
			}
			continue
		}
		state := supervisor.Starting
		if e.Kind == supervisor.EventReady {
			state = supervisor.Ready
		}
		if w := e.Worker; w.ID < 1 || w.ID > 2 || w.Slot != w.ID-1 || w.Generation != 0 || !slices.Contains(workers, w.Pid) || w.State != state || w.Started.IsZero() {
			t.Errorf("%s event of worker %+v: want worker 1 or 2 in slot 0 or 1, generation 0, %s, a pid of %v, a start time", e.Kind, w, state, workers)
		}
	}
	if ids := []int{evs[0].Worker.ID, evs[1].Worker.ID}; !slices.Equal(ids, []int{1, 2}) {
		t.Errorf("spawn events of workers %v, want 1 and 2 in order", ids)
	}
	mark := p.mark()
	p.signal(syscall.SIGUSR1)
	table, err := p.find(mark, "worker table", nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if table.int("workers") != 2 {
		t.Errorf("worker table lists %d workers, want 2", table.int("workers"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(p.all("worker")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("worker table rows: %v, want 2", p.all("worker"))
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
	for _, r := range p.all("worker") {
		if r.str("state") != "ready" || r.int("pid") <= 0 {
			t.Errorf("worker table row %v: want a ready worker with a pid", r)
		}
	}
}

// notifySocket is a fake systemd notification socket.
type notifySocket struct {
	path string
	conn *net.UnixConn
	msgs chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	dir, err := os.MkdirTemp("", "cfnotify") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, conn: conn, msgs: make(chan string, 100)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// next returns the next message that is not WATCHDOG=1.
func (n *notifySocket) next(t *testing.T) string {
	t.Helper()
	for {
		select {
		case m := <-n.msgs:
			if m != "WATCHDOG=1" {
				return m
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no systemd notification within 10s")
		}
	}
}

var monotonic = regexp.MustCompile(`MONOTONIC_USEC=[0-9]+`)

// TestSystemdNotify: the exact sd_notify messages, in order, for a start, a
// rolling restart and a graceful stop; WATCHDOG=1 while running; and
// workers do not inherit NOTIFY_SOCKET.
func TestSystemdNotify(t *testing.T) {
	n := newNotifySocket(t)
	p := startPool(t, poolConfig{workers: 2, env: []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=200000"}})
	ready := "READY=1\nSTATUS=2 workers serving on " + p.addr
	if got := n.next(t); got != ready {
		t.Fatalf("first notification %q, want %q", got, ready)
	}
	if v, err := p.get("/getenv?k=NOTIFY_SOCKET"); err != nil || v != "" {
		t.Errorf("a worker sees NOTIFY_SOCKET=%q (%v), want it unset", v, err)
	}
	p.signal(syscall.SIGHUP)
	got := []string{monotonic.ReplaceAllString(n.next(t), "MONOTONIC_USEC=N"), n.next(t)}
	want := []string{"RELOADING=1\nMONOTONIC_USEC=N\nSTATUS=rolling restart", ready}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notifications for a rolling restart (-want +got):\n%s", diff)
	}
	watchdogs := 0
	deadline := time.After(10 * time.Second)
	for watchdogs == 0 {
		select {
		case m := <-n.msgs:
			if m == "WATCHDOG=1" {
				watchdogs++
			} else {
				t.Errorf("unexpected notification %q", m)
			}
		case <-deadline:
			t.Fatal("no WATCHDOG=1 within 10s with WATCHDOG_USEC=200000")
		}
	}
	p.signal(syscall.SIGTERM)
	if got, want := n.next(t), "STOPPING=1\nSTATUS=stopping (graceful: requested)"; got != want {
		t.Errorf("notification on TERM %q, want %q", got, want)
	}
	if code, runErr := p.wait(10 * time.Second); code != 0 || runErr != "" {
		t.Fatalf("exit code %d, Run error %q", code, runErr)
	}
}

// TestSystemdMainPIDOnUpgrade: after a binary upgrade the old supervisor
// tells systemd the new main PID.
func TestSystemdMainPIDOnUpgrade(t *testing.T) {
	n := newNotifySocket(t)
	p := startPool(t, poolConfig{workers: 1, env: []string{"NOTIFY_SOCKET=" + n.path}})
	n.next(t) // READY=1
	p.signal(syscall.SIGUSR2)
	newPid := p.waitUpgradeBegin(0)
	if up := p.upgradeOutcome(0); up.Reason != "done" || up.NewPid != newPid {
		t.Fatalf("upgrade to supervisor %d: %s (new supervisor %d)", newPid, up.Reason, up.NewPid)
	}
	want := "MAINPID=" + strconv.Itoa(newPid)
	for {
		m := n.next(t)
		if m == want {
			break
		}
		if strings.HasPrefix(m, "MAINPID=") || strings.HasPrefix(m, "STOPPING=1") {
			t.Fatalf("notification %q before %q", m, want)
		}
	}
	if code, _ := p.wait(10 * time.Second); code != 0 {
		t.Errorf("old supervisor exit code %d, want 0", code)
	}
	// The old supervisor, draining, must not tell systemd it is stopping:
	// the service (now the new main PID) goes on.
	for {
		select {
		case m := <-n.msgs:
			if strings.HasPrefix(m, "STOPPING=1") {
				t.Fatalf("notification %q after the handover", m)
			}
			continue
		default:
		}
		break
	}
}

// TestSocketActivation: with LISTEN_FDS the workers share the socket the
// "service manager" passed, and retiring one under load loses nothing.
func TestSocketActivation(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := startPool(t, poolConfig{workers: 3, files: []*os.File{f},
		shell: `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`})
	f.Close() // the pool holds the socket now
	if p.addr != ln.Addr().String() {
		t.Fatalf("the pool serves on %s, want the passed socket's %s", p.addr, ln.Addr())
	}
	if r := p.waitFor("supervisor starting", nil, time.Second); r.str("migration") != "shared" {
		t.Errorf("migration %q, want shared", r.str("migration"))
	}
	if seen := p.pidsServing(2, 10*time.Second); len(seen) < 2 {
		t.Fatalf("connections reached %v, want several workers sharing the socket", seen)
	}
	l := startLoad(t, p.addr)
	l.waitServed(0, 300, 10*time.Second)
	mark := p.mark()
	p.signal(syscall.SIGTTOU)
	stop := p.waitEvent(mark, supervisor.EventStop, func(e event) bool { return e.Reason == "retired" })
	p.waitCleanExit(mark, stop.Worker.Pid)
	checkLossless(p, "socket activation, TTOU", l.finish("socket activation, TTOU"))
}

// TestPID1ReapsOrphans: as PID 1 of a new PID namespace (a container with
// no init), the supervisor reaps orphans re-parented to it and still stops
// gracefully on TERM.
func TestPID1ReapsOrphans(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: a new PID namespace needs root")
	}
	p := startPool(t, poolConfig{workers: 1, cloneflags: syscall.CLONE_NEWPID})
	p.waitFor("running as PID 1: reaping orphaned processes", nil, time.Second)
	if body, err := p.get("/orphan"); err != nil || body != "<nil>" {
		t.Fatalf("/orphan: %q, %v", body, err)
	}
	// The orphaned sleep becomes the supervisor's child, then exits: it must
	// be reaped, not left a zombie.
	var orphan int
	deadline := time.Now().Add(10 * time.Second)
	for orphan == 0 && time.Now().Before(deadline) {
		for _, c := range childrenOf(p.pid()) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c)); strings.TrimSpace(string(comm)) == "sleep" {
				orphan = c
			}
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
	if orphan == 0 {
		t.Fatal("the orphaned sleep never became the supervisor's child")
	}
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", orphan)); err != nil {
			break // reaped
		}
		if time.Now().After(deadline) {
			state, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan))
			t.Fatalf("orphan %d not reaped: %s", orphan, state)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the PID 1 supervisor is still running 10s after TERM")
	}
	// Its own pid is 1 inside the namespace.
	r, err := p.find(0, "run returned", func(r record) bool { return r.int("pid") == 1 }, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := p.exit.ExitCode(); code != 0 || r.str("err") != "" {
		t.Fatalf("PID 1 supervisor after TERM: exit code %d, Run error %q", code, r.str("err"))
	}
}

// TestSystemdUnitVerifies: examples/systemd/hello.service passes
// systemd-analyze verify without a warning.
func TestSystemdUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIP: systemd-analyze is not installed")
	}
	dir := t.TempDir()
	for _, name := range []string{"hello.service", "hello.socket"} {
		b, err := os.ReadFile(filepath.Join("..", "examples", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		exe, _ := os.Executable() // an executable that exists, for ExecStart and ExecReload
		b = []byte(strings.NewReplacer("/usr/local/bin/clusterflock-hello", exe, "/usr/local/bin/flockctl", exe).Replace(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sa, "verify", filepath.Join(dir, "hello.service"), filepath.Join(dir, "hello.socket"))
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestStrayDescriptors: a descriptor the supervisor inherited without
// close-on-exec (from whatever started it) does not pass on to the
// workers: they get exactly what the pool gives them.
func TestStrayDescriptors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	stray := fmt.Sprintf("pipe:[%d]", st.Ino)
	// fd 3 + 7 = 10 in the supervisor: above every descriptor a worker
	// is given, so nothing there would hide it.
	p := startPool(t, poolConfig{workers: 2, files: []*os.File{nil, nil, nil, nil, nil, nil, nil, w}})
	holds := func(pid int) bool {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); link == stray {
				return true
			}
		}
		return false
	}
	if !holds(p.pid()) {
		t.Fatalf("the supervisor does not hold the stray descriptor %s: the test proves nothing", stray)
	}
	for _, pid := range p.workerPids() {
		if holds(pid) {
			t.Errorf("worker %d inherited the supervisor's stray descriptor %s", pid, stray)
		}
	}
}

// TestStrayStatusBytes: whatever a worker writes on its status pipe —
// standby out of turn (which once panicked the supervisor), garbage, a line
// over 64 KiB, a flood — is that worker's failure: it is killed for a
// protocol violation and replaced, and the pool serves on.
func TestStrayStatusBytes(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2})
	for _, what := range []string{"standby2", "garbage", "huge", "flood"} {
		mark := p.mark()
		victim, err := p.get("/stray?what=" + what)
		if err != nil {
			t.Fatal(err)
		}
		kill := p.waitEvent(mark, supervisor.EventKill, func(e event) bool { return strconv.Itoa(e.Worker.Pid) == victim })
		if !strings.HasPrefix(kill.Reason, "protocol violation: ") {
			t.Errorf("%s: worker %s killed for %q, want a protocol violation", what, victim, kill.Reason)
		}
		p.waitEvent(mark, supervisor.EventReady, func(e event) bool { return e.Worker.Slot == kill.Worker.Slot })
		t.Logf("%s: worker %s killed (%s) and replaced", what, victim, kill.Reason)
	}
	if !alive(p.pid()) {
		t.Fatal("the supervisor died")
	}
	if got := p.pidsServing(2, 10*time.Second); len(got) < 1 {
		t.Fatal("the pool does not serve after the stray bytes")
	}
	p.signal(syscall.SIGTERM)
	if code, runErr := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("TERM after the stray bytes: exit %d, %s", code, runErr)
	}
}

// TestDeletedBinaryRefork: a pool whose binary is deleted (a deploy, or `go
// run` exiting) re-forks a killed worker from the supervisor's own image and
// keeps serving; a rolling restart, which runs the binary on disk, fails
// and says why, and the old workers keep serving.
func TestDeletedBinaryRefork(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "pool")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o755); err != nil {
		t.Fatal(err)
	}
	p := startPool(t, poolConfig{workers: 2, exe: copyPath})
	if err := os.Remove(copyPath); err != nil {
		t.Fatal(err)
	}
	for i := range 6 { // more than MaxStartFailures (5) before this fix
		pids := p.workerPids()
		mark := p.mark()
		if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ready := p.waitEvent(mark, supervisor.EventReady, nil)
		t.Logf("kill %d: worker %d replaced by %d from the deleted binary's image", i+1, pids[0], ready.Worker.Pid)
	}
	mark := p.mark()
	p.signal(syscall.SIGHUP)
	end := p.waitEvent(mark, supervisor.EventRestart, func(e event) bool { return e.Reason != "begin" })
	if !strings.HasPrefix(end.Reason, "aborted: ") || !strings.Contains(end.Reason, "no such file") {
		t.Errorf("HUP with the binary deleted: restart %q, want aborted naming the missing binary", end.Reason)
	}
	if got := p.pidsServing(2, 10*time.Second); len(got) == 0 {
		t.Fatal("the pool does not serve after the failed rolling restart")
	}
	p.signal(syscall.SIGTERM)
	if code, runErr := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("TERM: exit %d, %s", code, runErr)
	}
}

// TestSecondInstanceRefused: a second pool on an address where the first
// one listens is refused at start, naming the address and the pids holding
// it, and forks nothing; the first pool is untouched.
func TestSecondInstanceRefused(t *testing.T) {
	first := startPool(t, poolConfig{workers: 2})
	second := startPool(t, poolConfig{addr: first.addr, noWait: true})
	code, runErr := second.wait(10 * time.Second)
	if code == 0 || !strings.Contains(runErr, first.addr) || !strings.Contains(runErr, "already listen") {
		t.Fatalf("second pool on %s: exit %d, %q; want refused naming the address", first.addr, code, runErr)
	}
	named := false
	for _, pid := range first.workerPids() {
		named = named || strings.Contains(runErr, strconv.Itoa(pid))
	}
	if !named {
		t.Errorf("the refusal %q names none of the first pool's workers %v", runErr, first.workerPids())
	}
	if n := len(second.events(0, supervisor.EventSpawn)); n != 0 {
		t.Errorf("the refused pool forked %d worker(s)", n)
	}
	if got := first.pidsServing(2, 10*time.Second); len(got) != 2 {
		t.Errorf("the first pool serves from %v, want its 2 workers", got)
	}
}
