//go:build unix

package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
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
