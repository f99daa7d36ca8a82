package guard

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/clusterflock/clusterflock/internal/rundir"
)

// Request labels, set on each request's goroutine while its handler runs
// (Options.StuckTimeout), so that a goroutine dump names the request.
const (
	LabelMethod = "http.method"
	LabelPath   = "http.path"
	LabelStart  = "http.start" // RFC 3339, nanoseconds
)

// Blocked is a group of requests whose goroutines wait at the same place.
type Blocked struct {
	Method, Path string
	Age          time.Duration // the oldest's
	Count        int
	BlockedIn    string // the innermost function of the program's own code
	Waiting      string // the innermost function outside the runtime (where it waits: sync.(*Mutex).Lock, …)
}

// Report is a stuck worker's goroutine dump: where it is kept, and the
// requests it shows.
type Report struct {
	Path     string
	Requests []Blocked // oldest first
}

// String is the report in one line, for the log and the status pipe.
func (r Report) String() string {
	var parts []string
	for i, b := range r.Requests {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more groups", len(r.Requests)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %s %s (oldest %s) blocked in %s (waiting in %s)",
			b.Count, b.Method, b.Path, b.Age.Round(time.Millisecond), b.BlockedIn, b.Waiting))
	}
	if len(parts) == 0 {
		parts = append(parts, "no labelled request goroutine found")
	}
	if r.Path == "" {
		return strings.Join(parts, "; ") + "; no goroutine dump"
	}
	return strings.Join(parts, "; ") + "; goroutine dump: " + r.Path
}

// Dump writes this process's goroutines to a new file in dir: the full
// dump (debug=2: each goroutine's state and wait time) and the labelled
// profile (debug=1), and reports the requests it shows. dir must be this
// user's private directory (rundir.Open: created 0700, made 0700 if ours;
// another user's or a symbolic link is refused) and the file is new
// (rundir.Dir.Create: nothing planted there is followed). If it cannot be
// written, the report has no Path and the error says why.
func Dump(dir string, now time.Time) (Report, error) {
	var labelled, full bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&labelled, 1); err != nil {
		return Report{}, err
	}
	if err := pprof.Lookup("goroutine").WriteTo(&full, 2); err != nil {
		return Report{}, err
	}
	r := Report{Requests: parseLabelled(labelled.Bytes(), now)}
	d, err := rundir.Open(dir, true)
	if err != nil {
		return r, err
	}
	defer d.Close()
	name := fmt.Sprintf("stuck-%d-%s.txt", os.Getpid(), now.UTC().Format("20060102T150405.000"))
	r.Path = filepath.Join(dir, name)
	body := slices.Concat([]byte("# clusterflock: stuck worker "+fmt.Sprint(os.Getpid())+": "+r.String()+"\n\n"),
		full.Bytes(), []byte("\n\n# the same, grouped, with the requests' labels (debug=1)\n\n"), labelled.Bytes())
	if _, err := d.Create(name, body); err != nil {
		r.Path = ""
		return r, err
	}
	return r, nil
}

// parseLabelled reads a debug=1 goroutine profile: blocks of
// "N @ pcs", an optional "# labels: {…}" line and "#\tpc\tfunc+off\tfile"
// frames, separated by blank lines. It keeps the blocks labelled as
// requests.
func parseLabelled(p []byte, now time.Time) []Blocked {
	var out []Blocked
	sc := bufio.NewScanner(bytes.NewReader(p))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var cur *Blocked
	var count int
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur != nil {
				out = append(out, *cur)
			}
			cur = nil
		case !strings.HasPrefix(line, "#"):
			fmt.Sscanf(line, "%d @", &count)
		case strings.HasPrefix(line, "# labels: "):
			cur = requestOf(strings.TrimPrefix(line, "# labels: "), count, now)
		case cur != nil && strings.HasPrefix(line, "#\t"):
			cur.frame(line)
		}
	}
	if cur != nil {
		out = append(out, *cur)
	}
	slices.SortStableFunc(out, func(a, b Blocked) int { return int(b.Age - a.Age) })
	return out
}

// requestOf parses a labels line; nil unless it names a request.
func requestOf(labels string, count int, now time.Time) *Blocked {
	var m map[string]string
	if json.Unmarshal([]byte(labels), &m) != nil || m[LabelPath] == "" {
		return nil
	}
	b := &Blocked{Method: m[LabelMethod], Path: m[LabelPath], Count: count}
	if t, err := time.Parse(time.RFC3339Nano, m[LabelStart]); err == nil {
		b.Age = now.Sub(t)
	}
	return b
}

// frame takes one "#\tpc\tfunc+off\tfile:line" line, innermost first.
func (b *Blocked) frame(line string) {
	f := strings.Split(line, "\t")
	if len(f) < 3 {
		return
	}
	fn := f[2]
	if i := strings.LastIndex(fn, "+0x"); i > 0 {
		fn = fn[:i]
	}
	if b.Waiting == "" && !strings.HasPrefix(fn, "runtime.") && !strings.HasPrefix(fn, "internal/") {
		b.Waiting = fn // the first frame of a public API: sync.(*Mutex).Lock, net.(*conn).Read, …
	}
	if b.BlockedIn == "" && !library(fn) {
		b.BlockedIn = fn
	}
}

// library reports whether fn is the runtime's or the standard library's
// waiting machinery rather than the program's own code.
func library(fn string) bool {
	for _, p := range []string{"runtime.", "runtime/", "internal/", "sync.", "sync/", "time.", "net.", "net/", "io.", "os.", "syscall.", "context.", "database/sql."} {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}
