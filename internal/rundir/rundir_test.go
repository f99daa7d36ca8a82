//go:build unix

package rundir

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestOpen: a missing directory is created 0700; one of ours open to
// others is made 0700 and says so (with repair; refused without); a symbolic link, a file and another
// user's directory are refused with an error naming the path, the owner
// and the mode, and nothing is created through them.
func TestOpen(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "a", "fresh")
	d, err := Open(fresh, true)
	if err != nil {
		t.Fatalf("Open of a missing directory: %v", err)
	}
	d.Close()
	if fi, err := os.Lstat(fresh); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("the created directory: %v, %v; want a directory with mode 0700", fi.Mode(), err)
	}

	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	d, err = Open(open, true)
	if err != nil {
		t.Fatalf("Open of our directory with mode 0777: %v", err)
	}
	d.Close()
	if fi, _ := os.Lstat(open); fi.Mode().Perm() != 0o700 || d.Repaired != 0o777 {
		t.Errorf("our directory with mode 0777: now %v, Repaired %v; want 0700 and 0777", fi.Mode().Perm(), d.Repaired)
	}
	os.Chmod(open, 0o750)
	if _, err := Open(open, false); !errors.Is(err, ErrNotPrivate) || !strings.Contains(err.Error(), "mode 0750") {
		t.Errorf("Open without repair of our directory with mode 0750: %v; want ErrNotPrivate naming the mode", err)
	}
	if fi, _ := os.Lstat(open); fi.Mode().Perm() != 0o750 {
		t.Errorf("Open without repair changed the mode to %v", fi.Mode().Perm())
	}

	target := filepath.Join(base, "target")
	os.Mkdir(target, 0o700)
	link := filepath.Join(base, "link")
	os.Symlink(target, link)
	file := filepath.Join(base, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	uid := strconv.Itoa(os.Geteuid())
	for _, c := range []struct{ path, want string }{
		{link, "symbolic link"},
		{file, "regular file"},
	} {
		_, err := Open(c.path, true)
		if !errors.Is(err, ErrNotPrivate) {
			t.Errorf("Open(%s): %v; want ErrNotPrivate", c.path, err)
			continue
		}
		for _, w := range []string{c.path, c.want, "owner uid " + uid, "mode 0", "XDG_RUNTIME_DIR"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Open(%s): %q does not say %q", c.path, err, w)
			}
		}
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("the link's target has %d entries, want none", len(entries))
	}
}

// TestOpenForeign: a directory of another user (here nobody's, made by
// root, group- and world-writable or not) is refused, and its mode left.
func TestOpenForeign(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: making a directory of another user takes root")
	}
	const nobody = 65534
	for _, mode := range []os.FileMode{0o700, 0o777} {
		dir := filepath.Join(t.TempDir(), "foreign")
		os.Mkdir(dir, 0o700)
		os.Chmod(dir, mode)
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, true)
		if !errors.Is(err, ErrNotPrivate) || !strings.Contains(err.Error(), "owner uid 65534") || !strings.Contains(err.Error(), "mode "+"0"+strconv.FormatUint(uint64(mode), 8)) {
			t.Errorf("Open of nobody's directory (mode %v): %v; want ErrNotPrivate naming owner uid 65534 and the mode", mode, err)
		}
		if fi, _ := os.Lstat(dir); fi.Mode().Perm() != mode {
			t.Errorf("nobody's directory: mode %v after Open, want %v", fi.Mode().Perm(), mode)
		}
	}
}

// TestRepairListsForeign: our directory, open to others and repaired to
// 0700, lists the entries another user (here nobody, made by root) put in
// it meanwhile, a socket and a symbolic link among them, and OtherOwner
// says they are not ours; our own entries are not listed.
func TestRepairListsForeign(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: making an entry of another user takes root")
	}
	const nobody = 65534
	dir := filepath.Join(t.TempDir(), "open")
	os.Mkdir(dir, 0o700)
	os.Chmod(dir, 0o777)
	os.WriteFile(filepath.Join(dir, "mine"), nil, 0o600)
	planted := []string{"planted.sock", "planted-link", "planted-file"}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, planted[0]), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	os.Symlink("/etc/passwd", filepath.Join(dir, planted[1]))
	os.WriteFile(filepath.Join(dir, planted[2]), nil, 0o666)
	for _, name := range planted {
		if err := os.Lchown(filepath.Join(dir, name), nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	d, err := Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	var got []string
	for _, e := range d.Foreign {
		if e.UID != nobody {
			t.Errorf("foreign entry %s: uid %d, want %d", e.Name, e.UID, nobody)
		}
		got = append(got, e.Name)
	}
	slices.Sort(got)
	if want := slices.Sorted(slices.Values(planted)); !slices.Equal(got, want) {
		t.Errorf("Foreign = %v; want %v", got, want)
	}
	for name, other := range map[string]bool{planted[0]: true, planted[1]: true, "mine": false} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if uid, isOther := OtherOwner(fi); isOther != other || (other && uid != nobody) {
			t.Errorf("OtherOwner(%s) = %d, %v; want %v", name, uid, isOther, other)
		}
	}
	d, err = Open(dir, true)
	if err != nil {
		t.Fatalf("Open of the now private directory: %v", err)
	}
	defer d.Close()
	if d.Foreign != nil {
		t.Errorf("Open of the now private directory: Foreign %v; want none listed (no repair)", d.Foreign)
	}
}

// TestCreate: a file is created 0600; a name already taken, by a file or a
// planted symbolic link, is an error and nothing is written through it.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	path, err := d.Create("dump.txt", []byte("dump"))
	if err != nil || path != filepath.Join(dir, "dump.txt") {
		t.Fatalf("Create: %q, %v", path, err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode() != 0o600 {
		t.Errorf("the created file: %v, %v; want a regular file with mode 0600", fi.Mode(), err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	os.Symlink(victim, filepath.Join(dir, "planted.txt"))
	os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling.txt"))
	for _, name := range []string{"planted.txt", "dangling.txt", "dump.txt", "../escape.txt"} {
		if _, err := d.Create(name, []byte("overwritten")); err == nil {
			t.Errorf("Create(%q) over an existing name: no error", name)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the planted link's target now holds %q, want %q", b, "precious")
	}
	if b, _ := os.ReadFile(path); string(b) != "dump" {
		t.Errorf("the existing file now holds %q, want %q", b, "dump")
	}
	for _, gone := range []string{"nowhere", "../escape.txt"} {
		if _, err := os.Lstat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s was created", gone)
		}
	}
}

// TestCreateAfterSwap: a directory replaced by a symbolic link after Open
// does not redirect Create: the file goes into the directory Open checked.
func TestCreateAfterSwap(t *testing.T) {
	base := t.TempDir()
	dir, moved, elsewhere := filepath.Join(base, "dir"), filepath.Join(base, "moved"), filepath.Join(base, "elsewhere")
	os.Mkdir(elsewhere, 0o700)
	d, err := Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	os.Symlink(elsewhere, dir)
	if _, err := d.Create("dump.txt", []byte("dump")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(moved, "dump.txt")); err != nil {
		t.Errorf("the file is not in the directory Open checked: %v", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("the swapped-in link's target has %d entries, want none", len(entries))
	}
}
