//go:build linux

package supervisorproc

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestClearSocketPath: a stale socket at the control socket's path is
// removed; a live socket, a file or a symbolic link there is refused and
// left as it was, and the link's target untouched.
func TestClearSocketPath(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if err := clearSocketPath(stale, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("a stale socket: %v", err)
	}
	if _, err := os.Lstat(stale); err == nil {
		t.Error("the stale socket is still there")
	}

	live := filepath.Join(dir, "live.sock")
	ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: live, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	file, link, toLive := filepath.Join(dir, "file.sock"), filepath.Join(dir, "link.sock"), filepath.Join(dir, "tolive.sock")
	os.WriteFile(file, []byte("mine"), 0o600)
	os.Symlink(victim, link)
	os.Symlink(live, toLive)
	for _, c := range []struct{ path, want string }{
		{live, "another process answers"},
		{file, "is not a socket"},
		{link, "is not a socket"},
		{toLive, "is not a socket"},
	} {
		if err := clearSocketPath(c.path, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("clearSocketPath(%s): %v; want an error naming it: %q", c.path, err, c.want)
		}
		if _, err := os.Lstat(c.path); err != nil {
			t.Errorf("%s was removed", c.path)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the link's target holds %q", b)
	}
}

// TestClearSocketPathForeign: in this user's private directory (repaired
// from 0777), a listening socket, a file and a symbolic link another user
// (here nobody, made by root) planted at the control socket's path are
// removed, each with a warning naming its owner, so that the real control
// socket starts; nothing is said to the planted socket, and the link's
// target is untouched.
func TestClearSocketPathForeign(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: making an entry of another user takes root")
	}
	const nobody = 65534
	dir := t.TempDir()
	sock := filepath.Join(dir, "planted.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.SetUnlinkOnClose(false)
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	file, link := filepath.Join(dir, "file.sock"), filepath.Join(dir, "link.sock")
	os.WriteFile(file, []byte("theirs"), 0o666)
	os.Symlink(victim, link)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	for _, path := range []string{sock, file, link} {
		if err := os.Lchown(path, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		if err := clearSocketPath(path, log); err != nil {
			t.Errorf("clearSocketPath(%s) of nobody's entry: %v; want it removed", path, err)
		}
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("nobody's %s is still there", path)
		}
		var rec struct {
			Level, Path string
			Owner       int `json:"owner_uid"`
		}
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec.Level != "WARN" || rec.Path != path || rec.Owner != nobody {
			t.Errorf("log for %s: %q (%v); want a warning with its path and owner_uid %d", path, buf.String(), err, nobody)
		}
		buf.Reset()
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the link's target holds %q", b)
	}
	if pendingConn(t, ln) {
		t.Error("clearSocketPath connected to nobody's socket")
	}
}

// pendingConn reports whether a connection waits on ln, without waiting
// (ln's socket is non-blocking); it closes the one it takes.
func pendingConn(t *testing.T, ln *net.UnixListener) bool {
	raw, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var nfd int
	var aerr error
	raw.Control(func(fd uintptr) { nfd, _, aerr = syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC) })
	if aerr == nil {
		syscall.Close(nfd)
	}
	return aerr == nil
}
