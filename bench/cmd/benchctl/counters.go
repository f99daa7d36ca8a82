package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Per-request costs of the server, measured in the same runs as the ratios:
// context switches and CPU time from /proc (always), syscalls and the CPUs
// on which the TCP handshakes complete from perf tracepoints (when perf is
// installed and allowed). On loopback the SYN, the SYN-ACK and the final ACK
// are all processed on the CPU of the connecting client thread, so where the
// handshakes complete is where the SYNs land, which decides the socket a
// reuseport group picks when it steers by CPU.

// taskCounters is what the threads of a server tree have used so far.
type taskCounters struct {
	ctxsw uint64 // voluntary + involuntary context switches
	cpuNs uint64 // time on CPU
}

// treeCounters sums taskCounters over every thread of root and its
// descendants. A thread that exits takes its counts with it; Go servers
// keep their threads, so a measured run loses none.
func treeCounters(root int) taskCounters {
	var sum taskCounters
	for _, p := range descendants(root) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", p))
		for _, t := range tasks {
			sum.ctxsw += ctxSwitches(t)
			sum.cpuNs += firstField(filepath.Join(t, "schedstat"))
		}
	}
	return sum
}

// ctxSwitches reads voluntary_ctxt_switches + nonvoluntary_ctxt_switches
// from a task's status file.
func ctxSwitches(task string) uint64 {
	b, err := os.ReadFile(filepath.Join(task, "status"))
	if err != nil {
		return 0
	}
	var n uint64
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
			x, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			n += x
		}
	}
	return n
}

func firstField(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	fs := strings.Fields(string(b))
	if len(fs) == 0 {
		return 0
	}
	n, _ := strconv.ParseUint(fs[0], 10, 64)
	return n
}

// perfCounts is what the perf tracepoints counted during one run. ok is
// false when perf is missing or refused; the report then prints "–".
type perfCounts struct {
	ok         bool
	syscalls   uint64
	handshakes []uint64 // per CPU: passive TCP handshakes completed
}

// perfRun is the two perf stat processes of one run: syscalls of the
// server's threads, and handshakes per CPU system-wide.
type perfRun struct {
	sys, hs *exec.Cmd
	sysOut  *bytes.Buffer
	hsOut   *bytes.Buffer
	cancel  context.CancelFunc
}

// startPerf starts counting; stop ends it, and perf is killed after limit
// should stop never come. It returns nil when perf is not available. The
// threads counted are those the server tree has now (after the warm-up a
// Go server has all it will use).
func startPerf(root int, limit time.Duration) *perfRun {
	if _, err := exec.LookPath("perf"); err != nil {
		return nil
	}
	var pids []string
	for _, p := range descendants(root) {
		pids = append(pids, strconv.Itoa(p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	r := &perfRun{sysOut: &bytes.Buffer{}, hsOut: &bytes.Buffer{}, cancel: cancel}
	// Without a command, perf stat counts until SIGINT.
	r.sys = exec.CommandContext(ctx, "perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strings.Join(pids, ","))
	// TCP_SYN_RECV (3) → TCP_ESTABLISHED (1): the server side of a handshake.
	r.hs = exec.CommandContext(ctx, "perf", "stat", "-x,", "-a", "-A", "-e", "sock:inet_sock_set_state",
		"--filter", "oldstate == 3 && newstate == 1")
	for _, c := range []*exec.Cmd{r.sys, r.hs} {
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	r.sys.Stderr, r.hs.Stderr = r.sysOut, r.hsOut
	if r.sys.Start() != nil {
		cancel()
		return nil
	}
	if r.hs.Start() != nil {
		cancel()
		r.sys.Wait()
		return nil
	}
	// perf stat opens its counters after it starts: give it a moment, so
	// the run's first requests are counted too.
	time.Sleep(50 * time.Millisecond)
	return r
}

// stop ends both counters (SIGINT: perf stat prints its counts and exits)
// and parses what they printed.
func (r *perfRun) stop() perfCounts {
	if r == nil {
		return perfCounts{}
	}
	for _, c := range []*exec.Cmd{r.sys, r.hs} {
		c.Process.Signal(syscall.SIGINT)
	}
	r.sys.Wait()
	r.hs.Wait()
	r.cancel()
	var out perfCounts
	sys, okSys := parsePerf(r.sysOut.String(), false)
	hs, okHs := parsePerf(r.hsOut.String(), true)
	if !okSys || !okHs || len(sys) != 1 {
		return out
	}
	return perfCounts{ok: true, syscalls: sys[0], handshakes: hs}
}

// parsePerf reads perf stat -x, output: "count,unit,event,…" lines, or with
// perCPU "CPUn,count,unit,event,…" lines, in CPU order. A "<not counted>"
// or "<not supported>" count makes the whole reading unusable.
func parsePerf(s string, perCPU bool) ([]uint64, bool) {
	var out []uint64
	for _, line := range strings.Split(s, "\n") {
		fs := strings.Split(strings.TrimSpace(line), ",")
		if perCPU {
			if len(fs) < 2 || !strings.HasPrefix(fs[0], "CPU") {
				continue
			}
			fs = fs[1:]
		}
		if len(fs) < 3 || !strings.Contains(fs[2], ":") {
			continue
		}
		n, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			return nil, false
		}
		out = append(out, n)
	}
	return out, len(out) > 0
}

// perReq formats after−before per request, "" when there were no
// requests or the count went down (a process left the tree mid-run).
func perReq(before, after uint64, requests int64, prec int) string {
	if requests <= 0 || after < before {
		return ""
	}
	return strconv.FormatFloat(float64(after-before)/float64(requests), 'f', prec, 64)
}

// shares formats per-CPU counts as percentages, "52/48"; "" when there
// were none.
func shares(counts []uint64) string {
	var total uint64
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return ""
	}
	var parts []string
	for _, n := range counts {
		parts = append(parts, strconv.FormatUint((100*n+total/2)/total, 10))
	}
	return strings.Join(parts, "/")
}
