//go:build unix

package supervisorproc

import (
	"net"
	"os"
	"path/filepath"
	"strings"
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
	if err := clearSocketPath(stale); err != nil {
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
		if err := clearSocketPath(c.path); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.path) {
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
