package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// children lists the PIDs of pid's direct children, from
// /proc/<pid>/task/*/children (needs CONFIG_PROC_CHILDREN, present here).
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// liveChildren is children without zombies: a worker that has exited but is
// not yet reaped holds no socket any more.
func liveChildren(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		if alive(c) {
			out = append(out, c)
		}
	}
	return out
}

// descendants lists pid and every process below it.
func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out) && i < 4096; i++ {
		out = append(out, children(out[i])...)
	}
	return out
}

// procStat returns the fields of /proc/<pid>/stat after the command name;
// field 0 of the result is the state (field 3 in proc(5) numbering).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	f, err := procStat(pid)
	return err == nil && len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// jiffies is utime+stime of pid (all its threads), in clock ticks.
func jiffies(pid int) uint64 {
	f, err := procStat(pid)
	if err != nil || len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

// treeJiffies sums jiffies over pid and its live descendants.
func treeJiffies(pid int) uint64 {
	var sum uint64
	for _, p := range descendants(pid) {
		sum += jiffies(p)
	}
	return sum
}

// cpuNs is the CPU time of every thread of pid in nanoseconds, from
// /proc/<pid>/task/*/schedstat: finer than clock ticks, for the idle figure.
func cpuNs(pid int) uint64 {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum uint64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			n, _ := strconv.ParseUint(fs[0], 10, 64)
			sum += n
		}
	}
	return sum
}

// rssKB returns VmRSS and VmHWM (peak RSS) of pid in KiB.
func rssKB(pid int) (rss, hwm int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, _ := strconv.Atoi(fs[0])
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// sysCPU returns busy and total jiffies over all CPUs from /proc/stat.
func sysCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fs := strings.Fields(line)
	if len(fs) < 9 || fs[0] != "cpu" {
		return 0, 0
	}
	var v [8]uint64
	for i := range v {
		v[i], _ = strconv.ParseUint(fs[i+1], 10, 64)
		total += v[i]
	}
	// user nice system idle iowait irq softirq steal
	return total - v[3] - v[4], total
}

// cpuSnap is what a throughput measurement samples before and after wrk, to
// tell how much of the machine the server, wrk and everything else used.
type cpuSnap struct {
	busy, total, tree uint64
}

func snap(root int) cpuSnap {
	tree := treeJiffies(root)
	busy, total := sysCPU()
	return cpuSnap{busy: busy, total: total, tree: tree}
}

func readSysctl(name string) string {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// age is how long ago pid started, from /proc/<pid>/stat field 22 and
// /proc/uptime.
func age(pid int) time.Duration {
	f, err := procStat(pid)
	if err != nil || len(f) < 20 {
		return 0
	}
	start, _ := strconv.ParseFloat(f[19], 64)
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	up, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return time.Duration((up - start/100) * float64(time.Second))
}
