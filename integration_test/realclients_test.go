//go:build linux

package integration_test

// Issue 21: the clients production has, through every restart. wrk with
// keep-alive, a Go client sending POSTs over keep-alive (which Go's
// Transport does not retry), nginx with upstream keep-alive in front of the
// pool, websocket-like hijacked connections, and h2load over h2c and TLS.
// A test whose client is not installed is skipped, saying so (.ci/run
// installs them).

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
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
)

// realClientRoutes adds the handlers the real-client tests use to the
// helper's mux: POST /post reads the whole body and answers "<length>
// <pid>"; /ws answers an "Upgrade: echo" request 101, hijacks the
// connection and echoes each line until the client's "bye" or EOF;
// /ws-drain also closes it when the worker's drain starts.
func realClientRoutes(mux *http.ServeMux, pid string) {
	mux.HandleFunc("POST /post", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s", n, pid)
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "echo") {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		conn, rw, err := switchProtocols(w, pid)
		if err != nil {
			return
		}
		defer conn.Close()
		echoLines(rw)
	})
	mux.HandleFunc("/ws-drain", wsDrainEcho(pid)) // drainstarted_test.go
}

// switchProtocols hijacks the connection and answers 101 on it, naming
// the worker in X-Pid.
func switchProtocols(w http.ResponseWriter, pid string) (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Pid: " + pid + "\r\n\r\n")
	if err := rw.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, rw, nil
}

// echoLines writes back each line it reads until EOF, an error or "bye".
func echoLines(rw *bufio.ReadWriter) {
	for {
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		rw.WriteString(line)
		if rw.Flush() != nil || line == "bye\n" {
			return
		}
	}
}

// clientBinary returns the path of a client program, or skips the test
// saying which Debian package provides it.
func clientBinary(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		path, err = exec.LookPath("/usr/sbin/" + name) // nginx, off a user's PATH
	}
	if err != nil {
		t.Skipf("SKIP: %s is not installed (Debian package %s; .ci/run installs it): %v", name, pkg, err)
	}
	return path
}

// clientMechanisms are the migration modes the real-client tests run in,
// as root: eBPF, classic BPF steering forced, the shared listener forced,
// and the sysctl (skipped where net.ipv4.tcp_migrate_req cannot be set).
func clientMechanisms() []mechanism {
	return []mechanism{
		{name: "ebpf", migration: "ebpf", migrateReq: "0", want: "ebpf"},
		{name: "cbpf", migration: "cbpf", migrateReq: "0", want: "cbpf"},
		{name: "shared", migration: "shared", migrateReq: "0", want: "shared"},
		{name: "sysctl", migration: "sysctl", migrateReq: "1", want: "sysctl"},
	}
}

// rollingRestart sends SIGHUP and waits until the rolling restart is
// "done" and each of the workers it replaced (n) has exited 0.
func (p *pool) rollingRestart(n int) {
	p.t.Helper()
	mark := p.mark()
	p.signal(syscall.SIGHUP)
	end := p.waitEvent(mark, supervisor.EventRestart, func(e event) bool { return e.Reason != "begin" })
	if end.Reason != "done" {
		p.t.Fatalf("rolling restart: %s", end.Reason)
	}
	var stopped []int
	for len(stopped) < n {
		e := p.waitEvent(mark, supervisor.EventStop, func(e event) bool { return !slices.Contains(stopped, e.Worker.Pid) })
		stopped = append(stopped, e.Worker.Pid)
	}
	for _, pid := range stopped {
		p.waitCleanExit(mark, pid)
	}
}

// retireOne sends SIGTTOU and waits until the retired worker has exited 0.
func (p *pool) retireOne() {
	p.t.Helper()
	mark := p.mark()
	p.signal(syscall.SIGTTOU)
	stop := p.waitEvent(mark, supervisor.EventStop, func(e event) bool { return e.Reason == supervisor.ReasonRetired })
	p.waitCleanExit(mark, stop.Worker.Pid)
}

// upgrade sends SIGUSR2 and waits until the new supervisor serves and the
// old one has exited 0.
func (p *pool) upgrade() {
	p.t.Helper()
	mark := p.mark()
	p.signal(syscall.SIGUSR2)
	newPid := p.waitUpgradeBegin(mark)
	if res := p.upgradeOutcome(mark); res.NewPid != newPid || res.Reason != "done" {
		p.t.Fatalf("upgrade to supervisor %d: %s (new supervisor %d)", newPid, res.Reason, res.NewPid)
	}
	if code, runErr := p.wait(15 * time.Second); code != 0 || runErr != "" {
		p.t.Fatalf("old supervisor after the upgrade: exit code %d, Run error %q; want 0 and nil", code, runErr)
	}
}

// clientProc is a client program (wrk, h2load) run by a test, its output
// collected; it is killed and reaped when the test ends.
type clientProc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{} // closed once reaped
	err  error
}

func startClient(t *testing.T, path string, args ...string) *clientProc {
	t.Helper()
	c := &clientProc{cmd: exec.Command(path, args...), out: &bytes.Buffer{}, done: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

// finish waits (bounded) for the client to exit and returns its output;
// c.out is safe to read once c.done is closed.
func (c *clientProc) finish(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.cmd.Process.Kill()
		<-c.done
		t.Fatalf("%s still running after %v; killed. Output:\n%s", c.cmd.Path, timeout, c.out)
	}
	if c.err != nil {
		t.Fatalf("%s: %v. Output:\n%s", c.cmd.Path, c.err, c.out)
	}
	return c.out.String()
}

// exited reports whether the client has exited already.
func (c *clientProc) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitSockets waits until process pid has at least n sockets open: a
// client that opens its connections at start is then under way.
func waitSockets(t *testing.T, pid, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		got := 0
		for _, fd := range fds {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); strings.HasPrefix(l, "socket:") {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has %d sockets open after %v, want %d", pid, got, timeout, n)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// wrkResult is what wrk reports.
type wrkResult struct {
	requests                      int
	connect, read, write, timeout int // "Socket errors:"
	non2xx                        int // "Non-2xx or 3xx responses:"
}

func (r wrkResult) String() string {
	return fmt.Sprintf("%d requests, socket errors: connect %d, read %d, write %d, timeout %d; non-2xx or 3xx: %d",
		r.requests, r.connect, r.read, r.write, r.timeout, r.non2xx)
}

var (
	wrkRequestsRe = regexp.MustCompile(`(\d+) requests in `)
	wrkSocketRe   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xxRe   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads wrk's summary; the error lines are absent when there
// was no error.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRequestsRe.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no \"N requests in\" line in wrk's output:\n%s", out)
	}
	r.requests, _ = strconv.Atoi(m[1])
	if m := wrkSocketRe.FindStringSubmatch(out); m != nil {
		for i, p := range []*int{&r.connect, &r.read, &r.write, &r.timeout} {
			*p, _ = strconv.Atoi(m[i+1])
		}
	}
	if m := wrkNon2xxRe.FindStringSubmatch(out); m != nil {
		r.non2xx, _ = strconv.Atoi(m[1])
	}
	return r, nil
}

// TestWrkKeepAlive: wrk with 64 keep-alive connections through 3 rolling
// restarts, a TTOU and a binary upgrade, in every migration mode: 0 socket
// errors and 0 non-2xx answers.
func TestWrkKeepAlive(t *testing.T) {
	wrk := clientBinary(t, "wrk", "wrk")
	inEveryMechanism(t, func(t *testing.T, m mechanism) { testWrkKeepAlive(t, m, wrk) })
}

func testWrkKeepAlive(t *testing.T, m mechanism, wrk string) {
	p := m.start(t, poolConfig{workers: 3})
	// -d bounds the run; it is stopped with SIGINT (wrk then reports)
	// once the events are over.
	w := startClient(t, wrk, "-c64", "-t2", "-d60s", "--timeout", "5s", "http://"+p.addr+"/")
	waitSockets(t, w.cmd.Process.Pid, 64, 10*time.Second)
	start := time.Now()
	for range 3 {
		p.rollingRestart(3)
	}
	p.retireOne()
	p.upgrade()
	took := time.Since(start)
	if w.exited() {
		p.fatalf("wrk exited before the events were over:\n%s", w.out)
	}
	w.cmd.Process.Signal(syscall.SIGINT)
	r, err := parseWrk(w.finish(t, 10*time.Second))
	if err != nil {
		p.fatalf("%v", err)
	}
	label := "wrk -c64 keep-alive through 3 HUP, TTOU, USR2, " + m.name
	t.Logf("%s (events took %v): %v", label, took.Round(time.Millisecond), r)
	if r.connect+r.read+r.write+r.timeout+r.non2xx > 0 {
		p.errorf("%s: %v; want 0 socket errors and 0 non-2xx", label, r)
	}
	if r.requests < loadMin {
		p.errorf("%s: only %d requests", label, r.requests)
	}
}

// postBody is the size of each POST's body.
const postBody = 4 << 10

// startPostLoad starts loadClients closed-loop clients sending POSTs with a
// body to url over keep-alive, for at most 30 s: they share one
// http.Client whose Transport keeps an idle connection for each. Go's
// Transport does not retry a POST it has begun to send, so every failure
// is a lost request.
func startPostLoad(t *testing.T, url string) *load {
	tr := &http.Transport{MaxIdleConnsPerHost: loadClients, IdleConnTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: loadDeadline}
	body := bytes.Repeat([]byte("x"), postBody)
	return startLoadFunc(t, 30*time.Second, func() (int, string, string) {
		return post(c, url, body)
	})
}

// post sends one POST and returns the pid that answered, or the kind of
// failure and its full text.
func post(c *http.Client, url string, body []byte) (pid int, kind, detail string) {
	resp, err := c.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return 0, errKind(err), err.Error()
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, "read body: " + errKind(err), err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return 0, "status " + resp.Status, string(b)
	}
	n, p, _ := strings.Cut(string(b), " ")
	if n != strconv.Itoa(len(body)) {
		return 0, "short body", fmt.Sprintf("the worker read %s bytes of %d", n, len(body))
	}
	pid, err = strconv.Atoi(p)
	if err != nil {
		return 0, "bad answer", string(b)
	}
	return pid, "", ""
}

// inEveryMechanism runs test in a subtest for each of clientMechanisms.
func inEveryMechanism(t *testing.T, test func(*testing.T, mechanism)) {
	for _, m := range clientMechanisms() {
		t.Run(m.name, func(t *testing.T) {
			m.setup(t)
			test(t, m)
		})
	}
}

// TestGoClientPOSTKeepAlive: a Go http.Client sending POSTs with a body
// over keep-alive through 5 rolling restarts loses none, in every
// migration mode.
func TestGoClientPOSTKeepAlive(t *testing.T) { inEveryMechanism(t, testGoClientPOST) }

func testGoClientPOST(t *testing.T, m mechanism) {
	p := m.start(t, poolConfig{workers: 3})
	l := startPostLoad(t, "http://"+p.addr+"/post")
	l.waitServed(0, 300, 10*time.Second)
	for range 5 {
		p.rollingRestart(3)
	}
	label := fmt.Sprintf("Go client, %d clients sending POSTs of %d bytes over keep-alive, through 5 HUP, %s", loadClients, postBody, m.name)
	r := l.finish(label)
	if r.failed > 0 {
		p.errorf("%s: %d POSTs failed, want 0: %v", label, r.failed, r)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// nginxConf keeps a pool of 64 idle keep-alive connections to the
// upstream, as a production proxy does.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream pool {
		server %[2]s;
		keepalive 64;
	}
	server {
		listen 127.0.0.1:%[3]d;
		location / {
			proxy_pass http://pool;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
`

// startNginx runs nginx in the foreground, one process, with its prefix
// in a temporary directory, proxying to upstream; it returns its address
// and the path of its error log once it answers.
func startNginx(t *testing.T, upstream string) (addr, errorLog string) {
	t.Helper()
	nginx := clientBinary(t, "nginx", "nginx-light")
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, upstream, port), 0o644); err != nil {
		t.Fatal(err)
	}
	errorLog = filepath.Join(dir, "error.log")
	n := startClient(t, nginx, "-p", dir, "-c", conf, "-e", errorLog)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if n.exited() {
			t.Fatalf("nginx exited at start: %v\n%s", n.err, n.out)
		}
		if resp, err := c.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, errorLog
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx on %s does not answer 200 after 10s:\n%s", addr, n.out)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// nginxErrors counts the [error] lines of nginx's error log by what they
// say, without the client and request details.
func nginxErrors(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for line := range strings.SplitSeq(string(b), "\n") {
		_, msg, ok := strings.Cut(line, "[error] ")
		if !ok {
			continue
		}
		// "PID#TID: *CONN upstream prematurely closed connection while reading …, client: …"
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			msg = rest
		}
		if i := strings.IndexByte(msg, ' '); strings.HasPrefix(msg, "*") && i > 0 {
			msg = msg[i+1:]
		}
		msg, _, _ = strings.Cut(msg, ", client:")
		out[msg]++
	}
	return out
}

// TestNginxKeepAliveUpstream: nginx with upstream keep-alive in front of
// the pool, a Go client sending POSTs through it, through 3 rolling
// restarts: no 502 (nginx does not retry a POST it has sent), in every
// migration mode.
func TestNginxKeepAliveUpstream(t *testing.T) {
	clientBinary(t, "nginx", "nginx-light")
	inEveryMechanism(t, testNginxKeepAlive)
}

func testNginxKeepAlive(t *testing.T, m mechanism) {
	p := m.start(t, poolConfig{workers: 3})
	addr, errorLog := startNginx(t, p.addr)
	l := startPostLoad(t, "http://"+addr+"/post")
	l.waitServed(0, 300, 10*time.Second)
	for range 3 {
		p.rollingRestart(3)
	}
	label := "nginx (upstream keepalive 64), Go client POSTs through it, 3 HUP, " + m.name
	r := l.finish(label)
	errs := nginxErrors(t, errorLog)
	t.Logf("%s: nginx's error log: %v", label, errs)
	if r.failed > 0 || len(errs) > 0 {
		p.errorf("%s: %d POSTs failed, want 0: %v; nginx's error log: %v", label, r.failed, r, errs)
	}
}

// h2cProtocols allows HTTP/1 and unencrypted HTTP/2 (h2c with prior
// knowledge, as h2load speaks it): the helper's mode "h2c".
func h2cProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

// h2loadResult is h2load's "requests:" line, and its "Process Request
// Failure" lines.
type h2loadResult struct {
	total, started, done, succeeded, failed, errored, timeout int
	protocol                                                  string // "Application protocol:"
	// stopped counts the "Process Request Failure:N" lines: in a timed
	// run (-D) a client that cannot open its next stream (its connection
	// was told to go away) prints one and stops. The request it did not
	// send counts in the running N, not in the "requests:" line (N reached
	// 25 after 16 such lines where the final line said 9 failed, 473
	// started, 473 done).
	stopped int
}

var (
	h2loadRequestsRe = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2loadProtoRe    = regexp.MustCompile(`Application protocol: (\S+)`)
	h2loadStoppedRe  = regexp.MustCompile(`(?m)^Process Request Failure:`)
)

func parseH2load(out string) (h2loadResult, error) {
	var r h2loadResult
	m := h2loadRequestsRe.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no \"requests:\" line in h2load's output:\n%s", out)
	}
	for i, p := range []*int{&r.total, &r.started, &r.done, &r.succeeded, &r.failed, &r.errored, &r.timeout} {
		*p, _ = strconv.Atoi(m[i+1])
	}
	if m := h2loadProtoRe.FindStringSubmatch(out); m != nil {
		r.protocol = m[1]
	}
	r.stopped = len(h2loadStoppedRe.FindAllString(out, -1))
	return r, nil
}

// TestH2load: h2load (16 connections, 10 streams each) over h2c and over
// TLS with ALPN h2, each of 3 rolling restarts under its own bounded
// run: every request started is done, none timed out. (h2load 1.52 does not
// reconnect after a GOAWAY: each client whose connection is told to go
// away stops, so each run's load ends at its restart.)
func TestH2load(t *testing.T) {
	h2load := clientBinary(t, "h2load", "nghttp2-client")
	for _, c := range []struct{ mode, scheme, protocol string }{{"h2c", "http", "h2c"}, {"tls", "https", "h2"}} {
		t.Run(c.mode, func(t *testing.T) {
			p := startPool(t, poolConfig{mode: c.mode, workers: 2})
			for i := range 3 {
				// -D bounds each run; the restart is over well within it.
				h := startClient(t, h2load, "-c16", "-m10", "-D", "3", c.scheme+"://"+p.addr+"/")
				waitSockets(t, h.cmd.Process.Pid, 16, 10*time.Second)
				start := time.Now()
				p.rollingRestart(2)
				took := time.Since(start)
				if h.exited() {
					p.fatalf("HUP %d: h2load ended before the rolling restart was over (%v):\n%s", i+1, took, h.out)
				}
				r, err := parseH2load(h.finish(t, 15*time.Second))
				if err != nil {
					p.fatalf("%v", err)
				}
				label := fmt.Sprintf("h2load -c16 -m10 over %s, HUP %d of 3 (took %v)", c.protocol, i+1, took.Round(time.Millisecond))
				t.Logf("%s: %d total, %d started, %d done, %d succeeded, %d failed, %d errored, %d timeout; %d clients stopped after a GOAWAY (\"Process Request Failure\")",
					label, r.total, r.started, r.done, r.succeeded, r.failed, r.errored, r.timeout, r.stopped)
				if r.protocol != c.protocol {
					p.errorf("%s: application protocol %q, want %q", label, r.protocol, c.protocol)
				}
				// h2load's failures here are requests it queued and then
				// did not send: a GOAWAY read in the same buffer as the
				// responses that let it queue them (nghttp2 refuses them
				// itself). TestH2StreamsThroughHUP proves from the frames
				// on the wire that every stream sent is answered.
				if r.timeout > 0 || r.started != r.done {
					p.errorf("%s: %d timed out, %d started but %d done; want none timed out, all done", label, r.timeout, r.started, r.done)
				}
				if r.succeeded < 16*10 {
					p.errorf("%s: only %d requests succeeded: fewer than one per stream", label, r.succeeded)
				}
			}
		})
	}
}

// wsConn is the client side of the helper's /ws: a hijacked HTTP/1.1
// connection echoing lines, as a websocket without framing.
type wsConn struct {
	c   net.Conn
	br  *bufio.Reader
	pid int // the worker that answered 101
}

func dialWS(t *testing.T, addr string) *wsConn {
	t.Helper()
	return dialWSPath(t, addr, "/ws")
}

// dialWSPath opens the echo exchange of the helper's path.
func dialWSPath(t *testing.T, addr, path string) *wsConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: clusterflock\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s, want 101", resp.Status)
	}
	pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
	return &wsConn{c: c, br: br, pid: pid}
}

// echo sends msg and reads its echo, within a second.
func (w *wsConn) echo(msg string) error {
	w.c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(w.c, msg+"\n"); err != nil {
		return fmt.Errorf("write %q: %w", msg, err)
	}
	got, err := w.br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read the echo of %q: %w", msg, err)
	}
	if got != msg+"\n" {
		return fmt.Errorf("echo of %q: %q", msg, got)
	}
	return nil
}

// closed reports whether the server has closed the connection cleanly
// (EOF, no reset) after its last echo, within a second.
func (w *wsConn) closed() error {
	w.c.SetDeadline(time.Now().Add(time.Second))
	if b, err := w.br.ReadByte(); err == nil {
		return fmt.Errorf("byte %q after the last echo, want EOF", b)
	} else if err != io.EOF {
		return fmt.Errorf("after the last echo: %w, want EOF (a clean close)", err)
	}
	return nil
}

// recordTime is the time the helper logged r at.
func recordTime(r record) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, r.str("time"))
	return t
}

// stopRecord waits for the supervisor's EventStop of worker pid, from
// record index mark, and returns the time it was logged.
func (p *pool) stopTime(mark, pid int) time.Time {
	p.t.Helper()
	r, err := p.scan(mark, func(r record) bool {
		return r.str("msg") == eventMsg && r.event().Kind == supervisor.EventStop && r.event().Worker.Pid == pid
	}, 15*time.Second)
	if err != nil {
		p.t.Fatalf("no stop of worker %d: %v", pid, err)
	}
	return recordTime(r)
}

// TestWebsocketThroughHUP: a 2 s hijacked exchange on a worker that a
// rolling restart replaces, with ShutdownTimeout 5s, finishes: every echo
// is answered and the connection closes cleanly when the client says bye;
// only then does the worker exit, with status 0.
func TestWebsocketThroughHUP(t *testing.T) {
	p := startPool(t, poolConfig{workers: 1, shutdown: 5 * time.Second})
	ws := dialWS(t, p.addr)
	opened := time.Now()
	if err := ws.echo("hello"); err != nil {
		p.fatalf("%v", err)
	}
	mark := p.mark()
	p.signal(syscall.SIGHUP)
	stopped := p.stopTime(mark, ws.pid)
	n := 0
	for ; time.Since(opened) < 2*time.Second; n++ {
		if err := ws.echo(fmt.Sprintf("ping %d", n)); err != nil {
			exit, _ := p.findEvent(mark, supervisor.EventExit, func(e event) bool { return e.Worker.Pid == ws.pid }, 0)
			p.fatalf("echo %d, %v after the worker %d was asked to stop (its exit: %q): %v; "+
				"want the hijacked connection served until it closes or ShutdownTimeout (5s) ends",
				n, time.Since(stopped).Round(time.Millisecond), ws.pid, exit.Status, err)
		}
		time.Sleep(50 * time.Millisecond) // the exchange's pace, not a wait for a state
	}
	if err := ws.echo("bye"); err != nil {
		p.fatalf("after %d echoes: %v", n, err)
	}
	if err := ws.closed(); err != nil {
		p.fatalf("%v", err)
	}
	closed := time.Now()
	exit := p.waitCleanExit(mark, ws.pid)
	t.Logf("websocket of %v (%d echoes) through a HUP: the worker was asked to stop %v after it opened, exited %v after it closed (%s)",
		closed.Sub(opened).Round(time.Millisecond), n, stopped.Sub(opened).Round(time.Millisecond),
		time.Since(closed).Round(time.Millisecond), exit.Status)
}

// TestWebsocketPastShutdownTimeout: a hijacked exchange longer than
// ShutdownTimeout (2s) is closed at its deadline: not before the worker was
// asked to stop plus ShutdownTimeout minus a margin, and within
// ShutdownTimeout plus the margin.
func TestWebsocketPastShutdownTimeout(t *testing.T) {
	const shutdown, margin = 2 * time.Second, time.Second
	p := startPool(t, poolConfig{workers: 1, shutdown: shutdown})
	ws := dialWS(t, p.addr)
	if err := ws.echo("hello"); err != nil {
		p.fatalf("%v", err)
	}
	mark := p.mark()
	p.signal(syscall.SIGHUP)
	stopped := p.stopTime(mark, ws.pid)
	var err error
	for n := 0; err == nil; n++ {
		if time.Since(stopped) > shutdown+margin+time.Second {
			p.fatalf("the hijacked connection still answers %v after its worker was asked to stop, want it closed within ShutdownTimeout %v + %v",
				time.Since(stopped).Round(time.Millisecond), shutdown, margin)
		}
		err = ws.echo(fmt.Sprintf("ping %d", n))
		time.Sleep(50 * time.Millisecond) // the exchange's pace, not a wait for a state
	}
	after := time.Since(stopped)
	t.Logf("the hijacked connection ended %v after its worker was asked to stop (ShutdownTimeout %v): %v", after.Round(time.Millisecond), shutdown, err)
	if after < shutdown-margin || after > shutdown+margin {
		p.errorf("the hijacked connection was closed %v after its worker was asked to stop, want at ShutdownTimeout %v ± %v", after.Round(time.Millisecond), shutdown, margin)
	}
}
