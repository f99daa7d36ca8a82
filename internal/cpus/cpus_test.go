package cpus

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
)

// mountinfo lines of typical machines.
const (
	miRoot    = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
	miV2      = "30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
	miTmpfs   = "25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
	miUnified = "26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
	miCpuset  = "31 25 0:27 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpuset\n"
	miCpuacct = "32 25 0:28 / /sys/fs/cgroup/cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpuacct\n"
	miCPUAcct = "33 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct\n"
	miSystemd = "34 25 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd\n"

	mountsV2  = miRoot + miV2
	mountsV1  = miRoot + miTmpfs + miSystemd + miCpuset + miCpuacct + miCPUAcct
	mountsHyb = miRoot + miTmpfs + miUnified + miSystemd + miCPUAcct

	v1 = "/sys/fs/cgroup/cpu,cpuacct" // the v1 cpu controller's mount point
)

// countCase is one Count test over a fake tree.
type countCase struct {
	name      string
	cgroup    string            // /proc/self/cgroup; "" for none
	mountinfo string            // /proc/self/mountinfo; "" for none
	files     map[string]string // other files; a name ending in "/" is a directory
	affinity  int
	want      int
	wantWhy   string // exact, or ending in "*": a prefix
}

func TestCount(t *testing.T) {
	var cases []countCase
	for _, group := range [][]countCase{v2Cases(), v1Cases(), hybridCases(), missingCases(), malformedCases(), roundingCases()} {
		cases = append(cases, group...)
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			for name, content := range tt.files {
				files[name] = content
			}
			if tt.cgroup != "" {
				files["/proc/self/cgroup"] = tt.cgroup
			}
			if tt.mountinfo != "" {
				files["/proc/self/mountinfo"] = tt.mountinfo
			}
			n, why := Count(fakeTree(t, files), tt.affinity)
			if n != tt.want {
				t.Errorf("Count() n = %d, want %d (why %q)", n, tt.want, why)
			}
			if !matches(string(why), tt.wantWhy) {
				t.Errorf("Count() why =\n%q\nwant\n%q", why, tt.wantWhy)
			}
		})
	}
}

func v2Cases() []countCase {
	return []countCase{{
		name: "v2 limit", cgroup: "0::/app.slice/x.service\n", mountinfo: mountsV2,
		files:    map[string]string{"/sys/fs/cgroup/app.slice/x.service/cpu.max": "150000 100000\n"},
		affinity: 8, want: 2,
		wantWhy: "cgroup v2 cpu.max 150000 100000 (/sys/fs/cgroup/app.slice/x.service)",
	}, {
		name: "v2 max", cgroup: "0::/app.slice/x.service\n", mountinfo: mountsV2,
		files: map[string]string{
			"/sys/fs/cgroup/app.slice/x.service/cpu.max": "max 100000\n",
			"/sys/fs/cgroup/app.slice/cpu.max":           "max 100000\n",
		},
		affinity: 8, want: 8,
		wantWhy: "affinity; cgroup v2 /sys/fs/cgroup/app.slice/x.service: no CPU limit",
	}, {
		name: "v2 nested, tighter ancestor", cgroup: "0::/a/b/c\n", mountinfo: mountsV2,
		files: map[string]string{
			"/sys/fs/cgroup/a/b/c/cpu.max": "max 100000\n",
			"/sys/fs/cgroup/a/b/cpu.max":   "200000 100000\n",
			"/sys/fs/cgroup/a/cpu.max":     "400000 100000\n",
		},
		affinity: 8, want: 2,
		wantWhy: "cgroup v2 cpu.max 200000 100000 (/sys/fs/cgroup/a/b)",
	}, {
		name: "v2 nested, tighter leaf", cgroup: "0::/a/b/c\n", mountinfo: mountsV2,
		files: map[string]string{
			"/sys/fs/cgroup/a/b/c/cpu.max": "100000 100000\n",
			"/sys/fs/cgroup/a/cpu.max":     "400000 100000\n",
		},
		affinity: 8, want: 1,
		wantWhy: "cgroup v2 cpu.max 100000 100000 (/sys/fs/cgroup/a/b/c)",
	}, {
		name: "v2 cgroup namespace", cgroup: "0::/\n",
		mountinfo: miRoot + "40 22 0:26 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n",
		files:     map[string]string{"/sys/fs/cgroup/cpu.max": "300000 100000\n"},
		affinity:  64, want: 3,
		wantWhy: "cgroup v2 cpu.max 300000 100000 (/sys/fs/cgroup)",
	}, {
		name: "v2 subtree bind mount", cgroup: "0::/kubepods/pod1/ctr\n",
		mountinfo: miRoot + "40 22 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
		files: map[string]string{
			"/sys/fs/cgroup/ctr/cpu.max": "max 100000\n",
			"/sys/fs/cgroup/cpu.max":     "250000 100000\n",
		},
		affinity: 64, want: 3,
		wantWhy: "cgroup v2 cpu.max 250000 100000 (/sys/fs/cgroup)",
	}, {
		name: "v2 cgroup outside the namespace", cgroup: "0::/../../init\n", mountinfo: mountsV2,
		files:    map[string]string{"/sys/fs/cgroup/cpu.max": "100000 100000\n"},
		affinity: 4, want: 4,
		wantWhy: "affinity; cgroup v2 /../../init: no mount for it in /proc/self/mountinfo",
	}, {
		name: "v2 escaped mount point", cgroup: "0::/x\n",
		mountinfo: miRoot + `40 22 0:26 / /cg\040roup rw - cgroup2 cgroup2 rw` + "\n",
		files:     map[string]string{"/cg roup/x/cpu.max": "200000 100000\n"},
		affinity:  4, want: 2,
		wantWhy: "cgroup v2 cpu.max 200000 100000 (/cg roup/x)",
	}}
}

func v1Cases() []countCase {
	return []countCase{{
		name:      "v1 cpu,cpuacct with quota",
		cgroup:    "5:cpuset:/\n4:cpu,cpuacct:/docker/abc\n3:cpuacct:/\n1:name=systemd:/docker/abc\n",
		mountinfo: mountsV1,
		files: map[string]string{
			v1 + "/docker/abc/cpu.cfs_quota_us":                   "250000\n",
			v1 + "/docker/abc/cpu.cfs_period_us":                  "100000\n",
			v1 + "/docker/cpu.cfs_quota_us":                       "-1\n",
			"/sys/fs/cgroup/cpuacct/docker/abc/cpu.cfs_quota_us":  "100000\n", // not the cpu hierarchy
			"/sys/fs/cgroup/cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
		},
		affinity: 8, want: 3,
		wantWhy: "cgroup v1 cpu.cfs_quota_us 250000 cpu.cfs_period_us 100000 (" + v1 + "/docker/abc)",
	}, {
		name: "v1 quota -1", cgroup: "4:cpu,cpuacct:/docker/abc\n", mountinfo: mountsV1,
		files: map[string]string{
			v1 + "/docker/abc/cpu.cfs_quota_us":  "-1\n",
			v1 + "/docker/abc/cpu.cfs_period_us": "100000\n",
			v1 + "/cpu.cfs_quota_us":             "-1\n",
		},
		affinity: 8, want: 8,
		wantWhy: "affinity; cgroup v1 " + v1 + "/docker/abc: no CPU limit",
	}, {
		name: "v1 namespace-relative path", cgroup: "4:cpu,cpuacct:/docker/abc\n",
		mountinfo: miRoot + "33 22 0:29 /docker/abc " + v1 + " ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n",
		files: map[string]string{
			v1 + "/cpu.cfs_quota_us":  "200000\n",
			v1 + "/cpu.cfs_period_us": "100000\n",
		},
		affinity: 8, want: 2,
		wantWhy: "cgroup v1 cpu.cfs_quota_us 200000 cpu.cfs_period_us 100000 (" + v1 + ")",
	}, {
		name: "v1 cgroup namespace", cgroup: "4:cpu,cpuacct:/\n",
		mountinfo: miRoot + "33 22 0:29 / " + v1 + " rw - cgroup cgroup rw,cpu,cpuacct\n",
		files: map[string]string{
			v1 + "/cpu.cfs_quota_us":  "150000\n",
			v1 + "/cpu.cfs_period_us": "100000\n",
		},
		affinity: 8, want: 2,
		wantWhy: "cgroup v1 cpu.cfs_quota_us 150000 cpu.cfs_period_us 100000 (" + v1 + ")",
	}}
}

func hybridCases() []countCase {
	return []countCase{{
		name:      "hybrid: v1 cpu wins over v2",
		cgroup:    "12:cpuset:/\n4:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/u.scope\n0::/user.slice/u.scope\n",
		mountinfo: mountsHyb,
		files: map[string]string{
			"/sys/fs/cgroup/unified/user.slice/u.scope/cpu.max": "100000 100000\n",
			v1 + "/user.slice/cpu.cfs_quota_us":                 "300000\n",
			v1 + "/user.slice/cpu.cfs_period_us":                "100000\n",
		},
		affinity: 8, want: 3,
		wantWhy: "cgroup v1 cpu.cfs_quota_us 300000 cpu.cfs_period_us 100000 (" + v1 + "/user.slice)",
	}, {
		name:      "hybrid without cpu on v1: v2",
		cgroup:    "1:name=systemd:/u.scope\n0::/u.scope\n",
		mountinfo: mountsHyb,
		files:     map[string]string{"/sys/fs/cgroup/unified/u.scope/cpu.max": "100000 100000\n"},
		affinity:  8, want: 1,
		wantWhy: "cgroup v2 cpu.max 100000 100000 (/sys/fs/cgroup/unified/u.scope)",
	}}
}

func missingCases() []countCase {
	return []countCase{{
		name: "no cgroup files", affinity: 4, want: 4,
		wantWhy: "affinity; /proc/self/cgroup missing",
	}, {
		name: "no mountinfo", cgroup: "0::/\n", affinity: 4, want: 4,
		wantWhy: "affinity; /proc/self/mountinfo missing",
	}, {
		name: "no cpu.max anywhere", cgroup: "0::/a\n", mountinfo: mountsV2,
		affinity: 4, want: 4,
		wantWhy: "affinity; cgroup v2 /sys/fs/cgroup/a: no CPU limit",
	}, {
		name: "v1 cpu mount missing", cgroup: "4:cpu,cpuacct:/a\n0::/a\n", mountinfo: mountsV2,
		files:    map[string]string{"/sys/fs/cgroup/a/cpu.max": "100000 100000\n"},
		affinity: 4, want: 4,
		wantWhy: "affinity; cgroup v1 /a: no mount for it in /proc/self/mountinfo",
	}, {
		name: "unreadable cpu.max", cgroup: "0::/a\n", mountinfo: mountsV2,
		files:    map[string]string{"/sys/fs/cgroup/a/cpu.max/": ""},
		affinity: 4, want: 4,
		wantWhy: "affinity; /sys/fs/cgroup/a/cpu.max unreadable: *",
	}, {
		name: "mount point escaping the root", cgroup: "0::/a\n",
		mountinfo: miRoot + "40 22 0:26 / /../../sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
		files:     map[string]string{"/sys/fs/cgroup/a/cpu.max": "100000 100000\n"},
		affinity:  4, want: 1,
		wantWhy: "cgroup v2 cpu.max 100000 100000 (/sys/fs/cgroup/a)",
	}}
}

func malformedCases() []countCase {
	return []countCase{{
		name: "malformed /proc/self/cgroup", cgroup: "garbage\n4:cpu\n0:x\n\n", mountinfo: mountsV2,
		files:    map[string]string{"/sys/fs/cgroup/cpu.max": "100000 100000\n"},
		affinity: 4, want: 4,
		wantWhy: "affinity; no CPU cgroup in /proc/self/cgroup",
	}, {
		name: "malformed mountinfo lines skipped", cgroup: "0::/a\n",
		mountinfo: "garbage\n1 2 3 - cgroup2\n30 22 0:26 rel /x rw - cgroup2 cgroup2 rw\n" +
			`30 22 0:26 / /bad\9 rw - cgroup2 cgroup2 rw` + "\n" + mountsV2,
		files:    map[string]string{"/sys/fs/cgroup/a/cpu.max": "200000 100000\n"},
		affinity: 4, want: 2,
		wantWhy: "cgroup v2 cpu.max 200000 100000 (/sys/fs/cgroup/a)",
	}, {
		name: "malformed cpu.max", cgroup: "0::/a/b/c/d\n", mountinfo: mountsV2,
		files: map[string]string{
			"/sys/fs/cgroup/a/b/c/d/cpu.max": "garbage\n",
			"/sys/fs/cgroup/a/b/c/cpu.max":   "0 100000\n",
			"/sys/fs/cgroup/a/b/cpu.max":     "150000 0\n",
			"/sys/fs/cgroup/a/cpu.max":       "150000\n",
		},
		affinity: 4, want: 4,
		wantWhy: `affinity; /sys/fs/cgroup/a/b/c/d/cpu.max malformed: "garbage\n"; ` +
			`/sys/fs/cgroup/a/b/c/cpu.max malformed: "0 100000\n"; ` +
			`/sys/fs/cgroup/a/b/cpu.max malformed: "150000 0\n"; ` +
			`/sys/fs/cgroup/a/cpu.max malformed: "150000\n"`,
	}, {
		name: "malformed cpu.max, valid ancestor", cgroup: "0::/a\n", mountinfo: mountsV2,
		files: map[string]string{
			"/sys/fs/cgroup/a/cpu.max": "1.5 1\n",
			"/sys/fs/cgroup/cpu.max":   "300000 100000\n",
		},
		affinity: 4, want: 3,
		wantWhy: `cgroup v2 cpu.max 300000 100000 (/sys/fs/cgroup); /sys/fs/cgroup/a/cpu.max malformed: "1.5 1\n"`,
	}, {
		name: "malformed v1 files", cgroup: "4:cpu,cpuacct:/a/b/c\n", mountinfo: mountsV1,
		files: map[string]string{
			v1 + "/a/b/c/cpu.cfs_quota_us": "abc\n",
			v1 + "/a/b/cpu.cfs_quota_us":   "100000\n",
			v1 + "/a/b/cpu.cfs_period_us":  "0\n",
			v1 + "/a/cpu.cfs_quota_us":     "100000\n",
		},
		affinity: 4, want: 4,
		wantWhy: `affinity; ` + v1 + `/a/b/c/cpu.cfs_quota_us malformed: "abc\n"; ` +
			v1 + `/a/b: bad quota 100000 / period 0; ` +
			v1 + `/a/cpu.cfs_period_us missing (quota 100000)`,
	}}
}

func roundingCases() []countCase {
	limit := func(cpuMax string) map[string]string {
		return map[string]string{"/sys/fs/cgroup/cpu.max": cpuMax}
	}
	return []countCase{{
		name: "quota above affinity: affinity wins", cgroup: "0::/\n", mountinfo: mountsV2,
		files: limit("800000 100000\n"), affinity: 2, want: 2,
		wantWhy: "affinity; cgroup v2 cpu.max 800000 100000 (/sys/fs/cgroup) allows 8",
	}, {
		name: "quota equal to affinity", cgroup: "0::/\n", mountinfo: mountsV2,
		files: limit("200000 100000\n"), affinity: 2, want: 2,
		wantWhy: "affinity; cgroup v2 cpu.max 200000 100000 (/sys/fs/cgroup) allows 2",
	}, {
		name: "quota 0.5 CPU gives 1", cgroup: "0::/\n", mountinfo: mountsV2,
		files: limit("50000 100000\n"), affinity: 4, want: 1,
		wantWhy: "cgroup v2 cpu.max 50000 100000 (/sys/fs/cgroup)",
	}, {
		name: "quota 1.01 CPU gives 2", cgroup: "0::/\n", mountinfo: mountsV2,
		files: limit("101000 100000"), affinity: 4, want: 2,
		wantWhy: "cgroup v2 cpu.max 101000 100000 (/sys/fs/cgroup)",
	}, {
		name: "affinity 0 gives 1", affinity: 0, want: 1,
		wantWhy: "affinity; /proc/self/cgroup missing",
	}}
}

func matches(got, want string) bool {
	if prefix, ok := strings.CutSuffix(want, "*"); ok {
		return strings.HasPrefix(got, prefix)
	}
	return got == want
}

// fakeTree writes files below a new temporary root and returns the root.
func fakeTree(t testing.TB, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		dir := filepath.Dir(p)
		if strings.HasSuffix(name, "/") {
			dir = p
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(name, "/") {
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func TestAvailable(t *testing.T) {
	n, why := Available()
	t.Logf("Available() = %d, %q", n, why)
	if n < 1 || n > runtime.NumCPU() {
		t.Errorf("Available() = %d, want 1 ≤ n ≤ runtime.NumCPU() = %d (why %q)", n, runtime.NumCPU(), why)
	}
	if why == "" {
		t.Error("Available() Source is empty")
	}
}

func TestUnescape(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{`/plain`, "/plain", true},
		{`/a\040b`, "/a b", true},
		{`/a\011\012\134`, "/a\t\n\\", true},
		{`/a\04`, "", false},
		{`/a\089`, "", false},
		{`/a\777`, "", false},
		{`/a\`, "", false},
	}
	for _, tt := range tests {
		got, ok := unescape(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("unescape(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzCount feeds arbitrary /proc/self/cgroup, mountinfo and limit files to
// count (in memory: Count's fake trees on disk are too slow to fuzz): it
// must never panic, and its answer stays within [1, affinity].
func FuzzCount(f *testing.F) {
	f.Add("0::/a\n", mountsV2, "150000 100000\n", "100000\n", 4)
	f.Add("4:cpu,cpuacct:/a\n", mountsV1, "-1\n", "100000\n", 2)
	f.Add("4:cpu,cpuacct:/a\n", mountsV1, "50000\n", "100000\n", 2)
	f.Add("0::/../x\n", miRoot+`1 2 3 /.. /sys/fs/cgroup\040 - cgroup2 x`, "max", "", 0)
	f.Fuzz(func(t *testing.T, cgroup, mountinfo, limit, period string, affinity int) {
		fsys := fstest.MapFS{}
		for name, content := range map[string]string{
			"proc/self/cgroup":                  cgroup,
			"proc/self/mountinfo":               mountinfo,
			"sys/fs/cgroup/a/cpu.max":           limit,
			"sys/fs/cgroup/cpu.max":             limit,
			v1[1:] + "/a/cpu.cfs_quota_us":      limit,
			v1[1:] + "/a/cpu.cfs_period_us":     period,
			"sys/fs/cgroup/unified/a/cpu.max":   limit,
			"sys/fs/cgroup/unified/a/b/cpu.max": limit,
		} {
			fsys[name] = &fstest.MapFile{Data: []byte(content)}
		}
		n, why := count(fsys, affinity)
		if n < 1 || n > max(affinity, 1) || why == "" {
			t.Errorf("count() = %d, %q with affinity %d", n, why, affinity)
		}
	})
}
