//go:build unix

package rundir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Open makes or validates the private runtime directory path: it is
// created 0700 if missing (with its parents); if it exists it must be a
// real directory (not a symbolic link) owned by this process's effective
// uid, without group or other permission bits; with repair, one of ours
// that has them gets 0700 (Repaired). Anything else is an error wrapping
// ErrNotPrivate that names the path, its owner and its mode. The directory
// is opened without following a link, and checked through that descriptor.
func Open(path string, repair bool) (*Dir, error) {
	if err := os.Mkdir(path, 0o700); errors.Is(err, fs.ErrNotExist) {
		err = os.MkdirAll(path, 0o700)
		if err != nil {
			return nil, fmt.Errorf("clusterflock: runtime directory: %w", err)
		}
	} else if err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("clusterflock: runtime directory: %w", err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		var st unix.Stat_t
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			if unix.Lstat(path, &st) == nil {
				return nil, refused(path, "it is "+kind(uint32(st.Mode)), st.Uid, uint32(st.Mode))
			}
		}
		return nil, fmt.Errorf("clusterflock: runtime directory %s: %w", path, err)
	}
	d := &Dir{Path: path, fd: fd}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		d.Close()
		return nil, fmt.Errorf("clusterflock: runtime directory %s: %w", path, err)
	}
	switch {
	case int(st.Uid) != os.Geteuid():
		d.Close()
		return nil, refused(path, "it belongs to another user", st.Uid, uint32(st.Mode))
	case st.Mode&0o077 != 0 && !repair:
		d.Close()
		return nil, refused(path, "it is open to other users", st.Uid, uint32(st.Mode))
	case st.Mode&0o077 != 0:
		if err := unix.Fchmod(fd, 0o700); err != nil {
			d.Close()
			return nil, refused(path, fmt.Sprintf("it is open to others and cannot be made 0700 (%v)", err), st.Uid, uint32(st.Mode))
		}
		d.Repaired = os.FileMode(st.Mode) & 0o777
		d.Foreign = foreignEntries(fd)
	}
	return d, nil
}

// foreignEntries lists the entries of the directory fd that another user
// owns. It is a warning's content: an entry it cannot read is left out.
func foreignEntries(fd int) []Entry {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(dup), "rundir")
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	var foreign []Entry
	for _, name := range names {
		var st unix.Stat_t
		if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && int(st.Uid) != os.Geteuid() {
			foreign = append(foreign, Entry{Name: name, UID: st.Uid})
		}
	}
	return foreign
}

// OtherOwner returns the owner of fi (from os.Lstat) and whether that is
// another user than this process's effective uid: an entry of this user's
// private directory that someone else made before it was private, which
// nothing should trust.
func OtherOwner(fi fs.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, int(st.Uid) != os.Geteuid()
}

// Check validates path as Open does, without creating or changing it (for
// a client that looks for sockets there): an error wrapping
// fs.ErrNotExist if it is missing, ErrNotPrivate if it is not this user's
// own directory with mode 0700.
func Check(path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("clusterflock: runtime directory %s: %w", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return refused(path, "it is "+kind(uint32(st.Mode)), st.Uid, uint32(st.Mode))
	case int(st.Uid) != os.Geteuid():
		return refused(path, "it belongs to another user", st.Uid, uint32(st.Mode))
	case st.Mode&0o077 != 0:
		return refused(path, "it is open to other users", st.Uid, uint32(st.Mode))
	}
	return nil
}

// kind names a file type for an error.
func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFREG:
		return "a regular file, not a directory"
	case unix.S_IFSOCK:
		return "a socket, not a directory"
	}
	return "not a directory"
}

// Create writes body to a new file name in d, mode 0600: opened relative to
// d with O_CREAT|O_EXCL|O_NOFOLLOW, so that nothing already there (a file, a
// planted symbolic link) is followed or overwritten. It returns the file's
// path. A file it could not write whole is removed.
func (d *Dir) Create(name string, body []byte) (string, error) {
	path := filepath.Join(d.Path, name)
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return path, fmt.Errorf("clusterflock: %q is not a file name", name)
	}
	fd, err := unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return path, fmt.Errorf("clusterflock: creating %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	_, err = f.Write(body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(d.fd, name, 0)
		return path, fmt.Errorf("clusterflock: writing %s: %w", path, err)
	}
	return path, nil
}

// Close closes the directory.
func (d *Dir) Close() error { return unix.Close(d.fd) }
