// Package cpus counts the CPUs this process may really use: its CPU affinity
// mask, lowered to the CPU quota of the cgroup (v1 or v2) it runs in, the way
// Go's default GOMAXPROCS has been computed since Go 1.25.
//
// Differences from the Go runtime: the quota is checked at every level from
// the process's own cgroup up to the root of the cgroup mount (the runtime
// reads only the process's own cgroup); a quota below one CPU gives 1 (the
// runtime never goes below 2); and the files are read afresh on each call
// (the runtime keeps them open and re-reads them to follow changes). It never
// fails: a file it cannot read or parse sets no limit, and Source says so.
package cpus

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Source says where Available's (or Count's) answer came from, for the start
// log. It begins with the winner, "affinity" or the cgroup limit file and its
// contents, e.g. "cgroup v2 cpu.max 150000 100000 (/sys/fs/cgroup/app.slice)"
// or "cgroup v1 cpu.cfs_quota_us 50000 cpu.cfs_period_us 100000
// (/sys/fs/cgroup/cpu,cpuacct/docker/abc)", followed by "; "-separated notes:
// a looser cgroup limit, a missing or malformed file, no cgroup found, and so
// on.
type Source string

// Size limits for the files read: /proc/self/mountinfo may be large on hosts
// with many mounts; the cgroup limit files hold one short line.
const (
	maxProcFile  = 64 << 20
	maxLimitFile = 1 << 10
)

// limit is one cgroup CPU limit: at most n CPUs, as desc describes.
type limit struct {
	n    int
	desc string
}

// Count is Available over a filesystem root (tests pass a fake tree): it
// reads root/proc/self/cgroup, root/proc/self/mountinfo and the cgroup files
// they lead to; affinity is the affinity mask's CPU count. The result is
// min(affinity, ceil(quota/period)) over the process's cgroup and its
// ancestors within the cgroup mount, and never below 1. Unreadable or
// malformed files set no limit; the returned Source notes them.
func Count(root string, affinity int) (int, Source) {
	return count(os.DirFS(root), affinity)
}

// count is Count over any file system, which stands for the root.
func count(fsys fs.FS, affinity int) (int, Source) {
	n := max(affinity, 1)
	lim, found, notes := cgroupLimit(fsys)
	if found && lim.n < n {
		return lim.n, source(lim.desc, notes)
	}
	if found {
		notes = slices.Insert(notes, 0, fmt.Sprintf("%s allows %d", lim.desc, lim.n))
	}
	return n, source("affinity", notes)
}

func source(head string, notes []string) Source {
	return Source(strings.Join(append([]string{head}, notes...), "; "))
}

// cgroupLimit finds the process's CPU cgroup and returns the tightest limit
// on it, whether there is one, and notes on what it could not use.
func cgroupLimit(fsys fs.FS) (limit, bool, []string) {
	data, err := readFile(fsys, "/proc/self/cgroup", maxProcFile)
	if err != nil {
		return limit{}, false, []string{"/proc/self/cgroup " + errText(err)}
	}
	ver, cg, ok := parseSelfCgroup(data)
	if !ok {
		return limit{}, false, []string{"no CPU cgroup in /proc/self/cgroup"}
	}
	data, err = readFile(fsys, "/proc/self/mountinfo", maxProcFile)
	if err != nil {
		return limit{}, false, []string{"/proc/self/mountinfo " + errText(err)}
	}
	mnt, rel, ok := findMount(data, ver, cg)
	if !ok {
		return limit{}, false, []string{fmt.Sprintf(
			"cgroup v%d %s: no mount for it in /proc/self/mountinfo", ver, cg)}
	}
	return tightest(fsys, ver, mnt, rel)
}

// tightest reads the limit of the cgroup at mount point mnt + rel and of each
// of its ancestors up to mnt, and returns the lowest.
func tightest(fsys fs.FS, ver int, mnt, rel string) (best limit, found bool, notes []string) {
	read := readV2
	if ver == 1 {
		read = readV1
	}
	rel = path.Clean("/" + rel) // stays below mnt; the loop ends at "/"
	leaf := path.Join(mnt, rel)
	for {
		lim, ok, note := read(fsys, path.Join(mnt, rel))
		if note != "" {
			notes = append(notes, note)
		}
		if ok && (!found || lim.n < best.n) {
			best, found = lim, true
		}
		if rel == "/" {
			break
		}
		rel = path.Dir(rel)
	}
	if !found && len(notes) == 0 {
		notes = append(notes, fmt.Sprintf("cgroup v%d %s: no CPU limit", ver, leaf))
	}
	return best, found, notes
}

// readV2 reads dir/cpu.max: "max <period>" (no limit) or "<quota> <period>".
// A missing file is no limit without a note: the root cgroup has none, and
// neither has a cgroup whose parent does not enable the cpu controller.
func readV2(fsys fs.FS, dir string) (limit, bool, string) {
	file := path.Join(dir, "cpu.max")
	s, err := readFile(fsys, file, maxLimitFile)
	if errors.Is(err, fs.ErrNotExist) {
		return limit{}, false, ""
	}
	if err != nil {
		return limit{}, false, file + " " + errText(err)
	}
	f := strings.Fields(s)
	if len(f) >= 1 && len(f) <= 2 && f[0] == "max" {
		return limit{}, false, ""
	}
	if len(f) == 2 {
		q, err1 := strconv.ParseInt(f[0], 10, 64)
		p, err2 := strconv.ParseInt(f[1], 10, 64)
		if n, ok := ceilDiv(q, p); ok && err1 == nil && err2 == nil {
			return limit{n, fmt.Sprintf("cgroup v2 cpu.max %d %d (%s)", q, p, dir)}, true, ""
		}
	}
	return limit{}, false, malformed(file, s)
}

// readV1 reads dir/cpu.cfs_quota_us (negative: no limit) and, if there is a
// quota, dir/cpu.cfs_period_us.
func readV1(fsys fs.FS, dir string) (limit, bool, string) {
	qfile := path.Join(dir, "cpu.cfs_quota_us")
	q, ok, note := readInt(fsys, qfile)
	if !ok || q < 0 {
		return limit{}, false, note
	}
	pfile := path.Join(dir, "cpu.cfs_period_us")
	p, ok, note := readInt(fsys, pfile)
	if !ok {
		if note == "" {
			note = fmt.Sprintf("%s missing (quota %d)", pfile, q)
		}
		return limit{}, false, note
	}
	n, ok := ceilDiv(q, p)
	if !ok {
		return limit{}, false, fmt.Sprintf("%s: bad quota %d / period %d", dir, q, p)
	}
	desc := fmt.Sprintf("cgroup v1 cpu.cfs_quota_us %d cpu.cfs_period_us %d (%s)", q, p, dir)
	return limit{n, desc}, true, ""
}

// readInt reads a file holding one decimal integer. ok is false if the file
// is missing (note empty), unreadable or malformed (note says which).
func readInt(fsys fs.FS, file string) (v int64, ok bool, note string) {
	s, err := readFile(fsys, file, maxLimitFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, ""
	}
	if err != nil {
		return 0, false, file + " " + errText(err)
	}
	v, err = strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, false, malformed(file, s)
	}
	return v, true, ""
}

// ceilDiv returns ceil(q/p) for a positive quota and period. A zero or
// negative one is malformed: the kernel accepts neither.
func ceilDiv(q, p int64) (int, bool) {
	if q <= 0 || p <= 0 {
		return 0, false
	}
	c := q / p
	if q%p != 0 {
		c++
	}
	return int(min(c, math.MaxInt32)), true
}

func malformed(file, content string) string {
	if len(content) > 64 {
		content = content[:64] + "..."
	}
	return fmt.Sprintf("%s malformed: %q", file, content)
}

// tooLong is the error for a file larger than readFile's limit.
type tooLong int64

func (n tooLong) Error() string { return "longer than " + strconv.FormatInt(int64(n), 10) + " bytes" }

// readFile reads the absolute slash-separated path p in fsys, at most max
// bytes. p is cleaned first, so that no ".." leads out of fsys.
func readFile(fsys fs.FS, p string, max int64) (string, error) {
	f, err := fsys.Open(path.Clean("/" + p)[1:])
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return "", err
	}
	if int64(len(b)) > max {
		return "", tooLong(max)
	}
	return string(b), nil
}

// errText describes a readFile error without the (possibly fake) root.
func errText(err error) string {
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "missing"
	case errors.As(err, &pe):
		return "unreadable: " + pe.Err.Error()
	}
	return "unreadable: " + err.Error()
}
