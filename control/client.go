package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clusterflock/clusterflock/internal/rundir"
)

// DefaultDir is the directory of a user's control sockets when
// Options.ControlSocket is "": $XDG_RUNTIME_DIR/clusterflock, or
// /tmp/clusterflock-<uid>. It must be a directory of the user's own (not
// a symbolic link) with mode 0700; a pool refuses to use one that is not
// (one of the user's open to others is made 0700), for its socket and for
// its stuck workers' goroutine dumps alike.
func DefaultDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "clusterflock")
	}
	return filepath.Join(os.TempDir(), "clusterflock-"+strconv.Itoa(os.Getuid()))
}

// SocketName is the file name of the control socket of a pool on addr in
// DefaultDir: the address with ':' as '_' ("127.0.0.1_5000.sock").
func SocketName(addr string) string {
	r := strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "", "%", "_")
	return r.Replace(addr) + ".sock"
}

// Client talks to one pool's control socket.
type Client struct {
	Path string // the socket's path
}

// Do sends req and calls each (may be nil) for every reply but the last,
// which it returns. An action the pool refused or that failed is an error
// wrapping [ErrRefused] with the pool's reason.
func (c *Client) Do(ctx context.Context, req Request, each func(Reply)) (Reply, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return Reply{}, fmt.Errorf("control: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	req.V = Version
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return Reply{}, fmt.Errorf("control: %w", err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 4096), MaxLine)
	for sc.Scan() {
		var r Reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return Reply{}, fmt.Errorf("control: malformed reply: %w", err)
		}
		if !r.Done {
			if each != nil {
				each(r)
			}
			continue
		}
		if !r.OK {
			return r, fmt.Errorf("%w: %s", ErrRefused, r.Error)
		}
		return r, nil
	}
	if err := ctx.Err(); err != nil {
		return Reply{}, fmt.Errorf("control: %w", err)
	}
	if err := sc.Err(); err != nil {
		return Reply{}, fmt.Errorf("control: %w", err)
	}
	return Reply{}, errors.New("control: the pool closed the connection without a result")
}

// Status returns the pool's state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	r, err := c.Do(ctx, Request{Op: OpStatus}, nil)
	if err != nil || r.Status == nil {
		return Status{}, err
	}
	return *r.Status, nil
}

// probeTimeout bounds Find's question to one socket: a stopped or wedged
// supervisor's socket still accepts connections, but never answers.
const probeTimeout = 2 * time.Second

// Find returns the control socket of the pool whose supervisor is pid, or
// that serves addr, among the sockets in dir; with neither, the only pool
// there. It asks each socket for its status. A dir that is not the user's
// own with mode 0700 (another user's, a symbolic link) is refused: a
// socket there could be anyone's. A socket in it that another user owns
// (made while the directory was open to others, before a pool made it
// 0700) is not asked, and is named in the error if no pool is found;
// [FindForeign] also returns those.
func Find(ctx context.Context, dir string, pid int, addr string) (string, error) {
	path, _, err := FindForeign(ctx, dir, pid, addr)
	return path, err
}

// Foreign is a socket in Find's directory that another user owns: Find
// ignores it.
type Foreign struct {
	Path string
	UID  uint32 // its owner
}

// String returns "path (owner uid N)".
func (f Foreign) String() string { return fmt.Sprintf("%s (owner uid %d)", f.Path, f.UID) }

// FindForeign is Find, and also returns the sockets it ignored because
// another user owns them, for the caller to warn of.
func FindForeign(ctx context.Context, dir string, pid int, addr string) (string, []Foreign, error) {
	if err := rundir.Check(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", nil, fmt.Errorf("control: %w", err)
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	var found []string
	var foreign []Foreign
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode().Type() != fs.ModeSocket {
			continue // gone, or not a socket
		}
		if uid, other := rundir.OtherOwner(fi); other {
			foreign = append(foreign, Foreign{Path: p, UID: uid})
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		st, err := (&Client{Path: p}).Status(pctx)
		cancel()
		if err != nil {
			continue // stale, or not a pool
		}
		if (pid == 0 || st.PID == pid) && (addr == "" || st.Addr == addr || sameAddr(st.Addr, addr)) {
			found = append(found, p)
		}
	}
	if len(found) == 1 {
		return found[0], foreign, nil
	}
	return "", foreign, findError(dir, pid, addr, len(found), foreign)
}

// findError says why FindForeign found no one pool.
func findError(dir string, pid int, addr string, found int, foreign []Foreign) error {
	var ignored string
	if len(foreign) > 0 {
		ignored = fmt.Sprintf(" (ignored, another user's: %v; remove them)", foreign)
	}
	switch {
	case found == 0 && pid == 0 && addr == "":
		return fmt.Errorf("control: no pool of this user answers in %s%s", dir, ignored)
	case found == 0:
		return fmt.Errorf("control: no pool with pid %d / address %q answers in %s%s", pid, addr, dir, ignored)
	}
	return fmt.Errorf("control: %d pools answer in %s: say which with -p or -a", found, dir)
}

// sameAddr reports whether two host:port addresses name the same port with
// an equivalent host ("" and "0.0.0.0", "::" are all hosts; "localhost"
// is 127.0.0.1).
func sameAddr(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	norm := func(h string) string {
		switch h {
		case "", "0.0.0.0", "::":
			return ""
		case "localhost":
			return "127.0.0.1"
		}
		return h
	}
	return norm(ha) == norm(hb)
}
