//go:build unix

package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/clusterflock/clusterflock/internal/rundir"
)

// TestFindRefusesOpenDir: Find does not talk to sockets in a directory
// anyone could have put them in (mode 0777, or a symbolic link); a
// missing directory just has no pool.
func TestFindRefusesOpenDir(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	link := filepath.Join(base, "link")
	os.Symlink(t.TempDir(), link)
	for _, dir := range []string{open, link} {
		if _, err := Find(context.Background(), dir, 0, ""); !errors.Is(err, rundir.ErrNotPrivate) || !strings.Contains(err.Error(), dir) {
			t.Errorf("Find in %s: %v; want rundir.ErrNotPrivate naming it", dir, err)
		}
	}
	if _, err := Find(context.Background(), filepath.Join(base, "missing"), 0, ""); err == nil || !strings.Contains(err.Error(), "no pool of this user") {
		t.Errorf("Find in a missing directory: %v; want no pool", err)
	}
}

// TestFindIgnoresForeign: in this user's private directory, a pool socket
// another user (here nobody, made by root) planted before the directory
// was made private is never asked: Find picks this user's own pool beside
// it, FindForeign names it with its owner, and with only the planted one
// Find finds no pool and says which socket it ignored and whose it is.
func TestFindIgnoresForeign(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: making a socket of another user takes root")
	}
	const nobody = 65534
	dir := t.TempDir()
	os.Chmod(dir, 0o700) // as a pool leaves it
	planted := fakePool(t, filepath.Join(dir, "planted.sock"), 666, "127.0.0.1:5000")
	if err := os.Lchown(planted.path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Find(ctx, dir, 0, ""); err == nil || !strings.Contains(err.Error(), "no pool") ||
		!strings.Contains(err.Error(), planted.path) || !strings.Contains(err.Error(), "uid 65534") {
		t.Errorf("Find with only nobody's socket: %v; want no pool, naming %s and owner uid 65534", err, planted.path)
	}
	own := fakePool(t, filepath.Join(dir, "own.sock"), os.Getpid(), "127.0.0.1:5001")
	path, foreign, err := FindForeign(ctx, dir, 0, "")
	if err != nil || path != own.path {
		t.Errorf("FindForeign: %q, %v; want %s", path, err, own.path)
	}
	if len(foreign) != 1 || foreign[0] != (Foreign{Path: planted.path, UID: nobody}) {
		t.Errorf("FindForeign's foreign sockets: %v; want %s of uid %d", foreign, planted.path, nobody)
	}
	if path, err := Find(ctx, dir, 666, ""); err == nil || path != "" {
		t.Errorf("Find of the planted pool's pid: %q, %v; want no pool", path, err)
	}
	if n := planted.asked.Load(); n != 0 {
		t.Errorf("nobody's socket was asked %d times; want never", n)
	}
	if own.asked.Load() == 0 {
		t.Error("this user's own pool was never asked")
	}
}

// pool is a fake pool's control socket: it answers every request with its
// status, and counts them.
type pool struct {
	path  string
	asked atomic.Int32
}

// fakePool serves a pool's status (supervisor pid, addr) at path until the
// test ends.
func fakePool(t *testing.T, path string, pid int, addr string) *pool {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &pool{path: path}
	reply := fmt.Sprintf(`{"v":%d,"done":true,"ok":true,"status":{"pid":%d,"addr":%q}}`+"\n", Version, pid, addr)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.asked.Add(1)
			wg.Go(func() {
				defer c.Close()
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					c.Write([]byte(reply))
				}
			})
		}
	})
	return p
}
