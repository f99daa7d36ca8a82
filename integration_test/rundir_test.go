//go:build linux

package integration_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/control"
	"github.com/clusterflock/clusterflock/supervisor"
)

// TestForeignRuntimeDir: with XDG_RUNTIME_DIR unset, a pool of user nobody
// uses <TMPDIR>/clusterflock-65534 for its control socket and stuck dumps.
// Another user (root here) who made that directory first, open to all, and
// planted symbolic links at the socket's path and at the dump's names,
// pointing to a file of nobody's, gets nothing written through them nor
// into the directory: the pool starts without a control socket and says so
// loudly (an error record, and the start line), and the stuck worker is
// still replaced, its report saying the dump was refused. The same links in
// a directory of nobody's own that is open to others (made 0700 at start)
// are not followed either: the one at the socket's path, another user's, is
// removed (a warning names its owner) and the control socket starts.
func TestForeignRuntimeDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: running the pool as nobody beside another user takes root")
	}
	for _, c := range []struct {
		name  string
		owner int    // of the runtime directory, mode 0777
		want  string // in the control socket's error; "": it starts
	}{
		{"another user's", 0, "belongs to another user"},
		{"own, open to others", nobody, ""},
	} {
		t.Run(c.name, func(t *testing.T) { foreignRuntimeDir(t, c.owner, c.want) })
	}
}

func foreignRuntimeDir(t *testing.T, owner int, wantCtl string) {
	tmp := mkdirMode(t, "", "clusterflock-tmpdir-", 0o1777) // a /tmp of its own
	dir := filepath.Join(tmp, "clusterflock-"+strconv.Itoa(nobody))
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	os.Chown(dir, owner, owner)
	victimDir := mkdirMode(t, "", "clusterflock-victim-", 0o755)
	victim := filepath.Join(victimDir, "precious")
	const precious = "nobody's precious file\n"
	os.WriteFile(victim, []byte(precious), 0o600)
	os.Chown(victim, nobody, nobody)

	addr := freeAddr(t)
	planted := []string{control.SocketName(addr)}
	if err := os.Symlink(victim, filepath.Join(dir, planted[0])); err != nil {
		t.Fatal(err)
	}
	p := startPool(t, poolConfig{workers: 1, addr: addr, unprivileged: true, heartbeat: 400 * time.Millisecond, shutdown: time.Second,
		env: []string{"TMPDIR=" + tmp, "XDG_RUNTIME_DIR=", envWedge + "=1", envStuck + "=1s"}})
	start := p.waitFor("supervisor starting", nil, 0)
	if wantCtl == "" {
		socket := filepath.Join(dir, planted[0])
		if got, e := start.str("control_socket"), start.str("control_socket_error"); got != socket || e != "" {
			t.Errorf("the start line says control_socket %q, control_socket_error %q; want %s, none", got, e, socket)
		}
		if _, err := p.find(0, "", func(r record) bool {
			return r.str("level") == "WARN" && r.str("path") == socket && r.str("owner_uid") == "0"
		}, 0); err != nil {
			t.Errorf("no warning names the owner (uid 0) of the entry removed at the socket's path: %v", err)
		}
		planted = planted[:0:0] // the link at the socket's path is gone; the socket is there
		planted = append(planted, control.SocketName(addr))
	} else {
		if e := start.str("control_socket_error"); start.str("control_socket") != "" || !strings.Contains(e, dir) || !strings.Contains(e, wantCtl) {
			t.Errorf("the start line says control_socket %q, control_socket_error %q; want none, and an error naming %s: %q",
				start.str("control_socket"), e, dir, wantCtl)
		}
		if _, err := p.find(0, "", func(r record) bool { return r.str("level") == "ERROR" && strings.Contains(r.str("err"), dir) }, 0); err != nil {
			t.Errorf("no error record names the refused control socket: %v", err)
		}
	}

	pid, err := p.get("/")
	if err != nil {
		t.Fatal(err)
	}
	// The dump's name is stuck-<pid>-<UTC time to the ms>.txt: plant a link
	// for every millisecond of the next 5 s.
	for at := time.Now().UTC().Truncate(time.Millisecond); len(planted) <= 5000; at = at.Add(time.Millisecond) {
		name := fmt.Sprintf("stuck-%s-%s.txt", pid, at.Format("20060102T150405.000"))
		if err := os.Symlink(victim, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		planted = append(planted, name)
	}
	mark := p.mark()
	go p.get("/wedge")
	e := p.waitEvent(mark, supervisor.EventStuck, nil)
	if !strings.Contains(e.Reason, "no goroutine dump") || !strings.Contains(e.Reason, "the dump could not be written") {
		t.Errorf("the stuck report does not say the dump was refused: %s", e.Reason)
	}
	t.Logf("stuck report: %s", e.Reason)
	p.waitEvent(mark, supervisor.EventStop, func(ev event) bool { return ev.Worker.Pid == e.Worker.Pid && ev.Reason == "stuck" })
	p.waitEvent(mark, supervisor.EventReady, func(ev event) bool { return ev.Worker.Pid != e.Worker.Pid })
	p.waitEvent(mark, supervisor.EventExit, func(ev event) bool { return ev.Worker.Pid == e.Worker.Pid })
	if got, err := p.get("/"); err != nil || got == pid {
		t.Errorf("after the stuck worker: answered by %q (%v), want its replacement", got, err)
	}

	if b, err := os.ReadFile(victim); err != nil || string(b) != precious {
		t.Errorf("the planted links' target holds %d bytes (%v), want its %d", len(b), err, len(precious))
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	slices.Sort(planted)
	if !slices.Equal(names, planted) {
		t.Errorf("the runtime directory holds %d entries, want the %d planted: new %v", len(names), len(planted), difference(names, planted))
	}
}

// mkdirMode makes a temporary directory with mode, removed at the end.
func mkdirMode(t *testing.T, parent, pattern string, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// difference is what a has that b (sorted) has not.
func difference(a, b []string) []string {
	var out []string
	for _, s := range a {
		if _, ok := slices.BinarySearch(b, s); !ok {
			out = append(out, s)
		}
	}
	return out
}
