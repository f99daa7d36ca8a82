package cpus

import (
	"slices"
	"strconv"
	"strings"
)

// parseSelfCgroup picks the CPU cgroup from /proc/self/cgroup, whose lines
// are "hierarchy-ID:controller-list:path". As in the Go runtime, a v1
// hierarchy whose controllers include "cpu" wins; otherwise the v2 hierarchy
// (ID 0), if any. Malformed lines are skipped.
func parseSelfCgroup(data string) (ver int, cg string, ok bool) {
	v2, hasV2 := "", false
	for line := range strings.Lines(data) {
		id, rest, ok1 := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
		ctrls, p, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || !strings.HasPrefix(p, "/") {
			continue
		}
		if id == "0" {
			v2, hasV2 = p, true
		} else if hasCPU(ctrls) {
			return 1, p, true
		}
	}
	return 2, v2, hasV2
}

// hasCPU reports whether a comma-separated list contains "cpu" (as in
// "cpu,cpuacct"; "cpuacct" or "cpuset" alone do not count).
func hasCPU(list string) bool {
	return slices.Contains(strings.Split(list, ","), "cpu")
}

// mountEntry is the part of a /proc/self/mountinfo line used here.
type mountEntry struct {
	root      string // (4) root of the mount within the filesystem
	point     string // (5) mount point
	fstype    string // (9)
	superOpts string // (11)
}

// findMount returns the mount point of the first mount, as in the Go runtime,
// of the cgroup hierarchy for version ver (cgroup2, or cgroup with the cpu
// controller) that contains cgroup cg, and cg's path relative to that mount.
func findMount(data string, ver int, cg string) (mnt, rel string, ok bool) {
	for line := range strings.Lines(data) {
		m, ok := parseMount(strings.TrimSuffix(line, "\n"))
		if !ok || !m.isCPU(ver) {
			continue
		}
		if rel, ok := relTo(cg, m.root); ok {
			return m.point, rel, true
		}
	}
	return "", "", false
}

func (m mountEntry) isCPU(ver int) bool {
	if ver == 2 {
		return m.fstype == "cgroup2"
	}
	return m.fstype == "cgroup" && hasCPU(m.superOpts)
}

// parseMount parses one mountinfo line:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	(1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//
// Fields never contain spaces: the kernel escapes them as octal "\040".
func parseMount(line string) (mountEntry, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	f, g := strings.Fields(pre), strings.Fields(post)
	if !ok || len(f) < 6 || len(g) < 1 {
		return mountEntry{}, false
	}
	root, ok1 := unescape(f[3])
	point, ok2 := unescape(f[4])
	if !ok1 || !ok2 || !strings.HasPrefix(root, "/") || !strings.HasPrefix(point, "/") {
		return mountEntry{}, false
	}
	m := mountEntry{root: root, point: point, fstype: g[0]}
	if len(g) >= 3 {
		m.superOpts = g[2]
	}
	return m, true
}

// relTo returns cgroup cg's path below a mount whose root is mroot ("" for
// the mount's root itself). In a cgroup namespace /proc/self/cgroup shows
// paths relative to the namespace root, which is what a mount made inside
// the namespace shows as its root ("/"). A path starting with "/.." is
// outside the namespace: no mount shows where it is.
func relTo(cg, mroot string) (string, bool) {
	var rel string
	switch {
	case mroot == "/":
		rel = cg
	case cg == mroot:
		rel = ""
	case strings.HasPrefix(cg, mroot+"/"):
		rel = cg[len(mroot):]
	default:
		return "", false
	}
	if rel == "/.." || strings.HasPrefix(rel, "/../") {
		return "", false
	}
	return rel, true
}

// unescape undoes the kernel's octal escapes in mountinfo paths ("\040" for
// a space; also tab, newline and backslash).
func unescape(s string) (string, bool) {
	if !strings.Contains(s, `\`) {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 >= len(s) {
			return "", false
		}
		c, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(c))
		i += 3
	}
	return b.String(), true
}
