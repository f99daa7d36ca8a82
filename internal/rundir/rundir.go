// Package rundir owns the pool's private runtime directory
// (control.DefaultDir, or the directory of Options.ControlSocket): where the
// control socket lives and a stuck worker writes its goroutine dump. The
// default, /tmp/clusterflock-<uid> without XDG_RUNTIME_DIR, has a name any
// local user can predict and create first; Open refuses such a directory
// instead of writing into it, and Dir.Create never follows a link planted
// in it.
package rundir

import (
	"errors"
	"fmt"
	"os"
)

// ErrNotPrivate is wrapped by the error of Open for a directory that is not
// this user's own: a symbolic link, not a directory, another user's, or open
// to others and not ours to fix.
var ErrNotPrivate = errors.New("not a private directory")

// Dir is a private runtime directory, open: files are created relative to
// it, so that the path being swapped after Open cannot redirect them.
type Dir struct {
	Path string // as given to Open
	// Repaired is the permission bits it had if it was this user's but
	// open to group or others: Open set it to 0700. Zero otherwise.
	Repaired os.FileMode
	// Foreign lists, if Open repaired the directory, the entries in it
	// that another user owns: made while it was open, by anyone. Nothing
	// here trusts them (see OtherOwner); the caller warns of them.
	Foreign []Entry
	fd      int
}

// Entry is an entry of a Dir that another user owns.
type Entry struct {
	Name string
	UID  uint32 // its owner
}

// String returns "name (uid N)".
func (e Entry) String() string { return fmt.Sprintf("%s (uid %d)", e.Name, e.UID) }

// refused is the error for a directory that Open will not use: it names
// the path, what is wrong, the owner and the mode, and the fixes.
func refused(path, why string, uid uint32, mode uint32) error {
	return fmt.Errorf("clusterflock: runtime directory %s refused: %s (owner uid %d, mode %#o; this process runs as uid %d); "+
		"remove it, or set XDG_RUNTIME_DIR to a directory of this user's with mode 0700: %w",
		path, why, uid, mode&0o7777, os.Geteuid(), ErrNotPrivate)
}
