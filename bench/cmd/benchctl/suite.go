package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// config is one run of the suite.
type config struct {
	quick         bool
	rounds        int
	durOK         int // wrk seconds per mode, trivial handler
	dur           int // wrk seconds per mode, other handlers
	warmup        int
	conns         int
	workers       int
	placements    []string
	handlers      []string
	serverNames   []string
	poolMHandlers []string
	poolSHandlers []string
	scrapeWorkers []int
	scrapeN       int
	scrapeDur     time.Duration
	reforkReps    int
	killReps      int
	rollingReps   int
	supDur        time.Duration
	rolling       bool
	rollingNote   string
	poolBuilt     bool
	poolBuildErr  string
	lifecycle     bool
	steps         []string
	victimAge     time.Duration
	quietMax      float64
	quietWait     time.Duration
	retries       int
	deadline      time.Time
	remeasured    int
	busyStarts    int
	command       string

	benchDir, work, out, goserver, wrkScript string
	serverCPU, wrkCPU                        string

	port    int
	mu      sync.Mutex
	tracked []int
	pidfile string
	notes   []string
}

// track records a server's PID (= its process group) in the pidfile that
// bench/run's EXIT trap reads, should this process die without cleaning up.
func (c *config) track(pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tracked = append(c.tracked, pid)
	f, err := os.OpenFile(c.pidfile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err == nil {
		fmt.Fprintln(f, pid)
		f.Close()
	}
}

func (c *config) killAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pid := range c.tracked {
		for _, p := range descendants(pid) {
			if p > 1 {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func suiteMain(args []string) error {
	c := &config{workers: runtime.NumCPU()}
	fs := flag.NewFlagSet("suite", flag.ContinueOnError)
	fs.BoolVar(&c.quick, "quick", false, "smoke run: 1 round, 1 s per mode, shared placement, trivial handler, few lifecycle reps")
	fs.IntVar(&c.rounds, "rounds", 5, "interleaved rounds")
	fs.IntVar(&c.durOK, "dur-ok", 3, "wrk seconds per mode for the trivial handler")
	fs.IntVar(&c.dur, "dur", 2, "wrk seconds per mode for the alloc and sleep handlers")
	fs.IntVar(&c.warmup, "warmup", 1, "keep-alive warm-up seconds before each server's measurements")
	fs.IntVar(&c.conns, "conns", 64, "wrk connections")
	fs.IntVar(&c.workers, "workers", c.workers, "pool size (and nginx/node workers); default the machine's CPU count")
	placements := fs.String("placements", "shared-t1,shared-t2", "placements: shared-t1, shared-t2 (no pinning; wrk with 1 or 2 threads), pinned (server on -server-cpu, wrk -t1 on -wrk-cpu)")
	handlers := fs.String("handlers", "ok,alloc", "handlers (also: sleep)")
	serverList := fs.String("servers", "single,singleAA,pool,singleK,poolK,nginx",
		"servers (also: poolM, poolS, pool1, node; poolN = pool with GOMAXPROCS=workers per worker, poolC = pool with Migration cbpf, poolSh = Migration shared, singleD = single with TCP_DEFER_ACCEPT)")
	poolMHandlers := fs.String("poolM-handlers", "ok", "handlers poolM (the pool with Options.Metrics) runs in the throughput rounds")
	poolSHandlers := fs.String("poolS-handlers", "ok", "handlers poolS (the pool with Options.StuckTimeout) runs in the throughput rounds")
	scrapeWorkers := fs.String("scrape-workers", "2,16", "scrape step: poolM worker counts (Options.Workers)")
	fs.IntVar(&c.scrapeN, "scrape-n", 200, "scrape step: sequential GET /metrics per worker count (latency)")
	fs.DurationVar(&c.scrapeDur, "scrape-dur", 20*time.Second, "scrape step: supervisor CPU sampling time, scraped once per second, no load")
	fs.IntVar(&c.reforkReps, "refork-reps", 20, "refork repetitions")
	fs.IntVar(&c.killReps, "kill-reps", 3, "SIGKILL-under-load repetitions per mode")
	fs.IntVar(&c.rollingReps, "rolling-reps", 3, "rolling restart repetitions per mode")
	fs.DurationVar(&c.supDur, "sup-dur", 5*time.Second, "supervisor RSS/CPU sampling time per state")
	fs.BoolVar(&c.rolling, "rolling", false, "the library handles SIGHUP (rolling restart): measure it")
	fs.StringVar(&c.rollingNote, "rolling-note", "not yet implemented (no SIGHUP in the library's root package)", "note when -rolling is off")
	fs.BoolVar(&c.poolBuilt, "pool-built", true, "the goserver binary includes the clusterflock pool")
	fs.StringVar(&c.poolBuildErr, "pool-build-err", "", "why the pool is missing")
	fs.BoolVar(&c.lifecycle, "lifecycle", true, "measure lifecycle costs")
	steps := fs.String("steps", "supervisor,refork,kill,rolling,scrape", "lifecycle steps to run (scrape: the cost of GET /metrics, on poolM)")
	fs.DurationVar(&c.victimAge, "victim-age", 1500*time.Millisecond,
		"a worker is killed only once it is this old (the library backs off reforks of workers that die younger than 1s)")
	fs.Float64Var(&c.quietMax, "quiet-max", 25, "before each server start, wait while other processes use more than this % of all CPUs")
	fs.DurationVar(&c.quietWait, "quiet-wait", 10*time.Second, "longest such wait per server start")
	fs.IntVar(&c.retries, "retries", 2, "re-measure a server's turn up to this many times when other processes used more than 15% of the CPUs during it")
	budget := fs.Duration("budget", 18*time.Minute, "time budget of the suite: waits and re-measurements stop when the rest of the run needs the remaining time")
	fs.StringVar(&c.command, "command", "bench/run", "command line to quote in the results")
	fs.StringVar(&c.benchDir, "bench", ".", "the bench/ directory")
	fs.StringVar(&c.work, "work", "", "scratch directory (logs, nginx prefix)")
	fs.StringVar(&c.out, "out", "", "output directory for throughput.csv, lifecycle.csv, meta.json")
	fs.StringVar(&c.goserver, "goserver", "", "path of the goserver binary")
	fs.StringVar(&c.serverCPU, "server-cpu", "0", "taskset CPU list of the server tree when pinned")
	fs.StringVar(&c.wrkCPU, "wrk-cpu", "1", "taskset CPU list of wrk when pinned")
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("rounds", func() { c.rounds = 1 })
		def("dur-ok", func() { c.durOK = 1 })
		def("dur", func() { c.dur = 1 })
		def("placements", func() { *placements = "shared-t1" })
		def("handlers", func() { *handlers = "ok" })
		def("servers", func() { *serverList = "single,singleAA,pool,poolK,poolM,poolS,nginx" })
		def("refork-reps", func() { c.reforkReps = 5 })
		def("kill-reps", func() { c.killReps = 1 })
		def("rolling-reps", func() { c.rollingReps = 1 })
		def("sup-dur", func() { c.supDur = 2 * time.Second })
		def("scrape-n", func() { c.scrapeN = 50 })
		def("scrape-dur", func() { c.scrapeDur = 3 * time.Second })
		def("budget", func() { *budget = 75 * time.Second })
	}
	c.deadline = time.Now().Add(*budget)
	c.placements = splitList(*placements)
	for _, p := range c.placements {
		if _, err := placementOf(p); err != nil {
			return err
		}
	}
	c.handlers = splitList(*handlers)
	c.serverNames = splitList(*serverList)
	c.steps = splitList(*steps)
	c.poolMHandlers = splitList(*poolMHandlers)
	c.poolSHandlers = splitList(*poolSHandlers)
	for _, f := range splitList(*scrapeWorkers) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return fmt.Errorf("bad -scrape-workers entry %q", f)
		}
		c.scrapeWorkers = append(c.scrapeWorkers, n)
	}
	if c.out == "" || c.work == "" || c.goserver == "" {
		return errors.New("-out, -work and -goserver are required")
	}
	c.benchDir, _ = filepath.Abs(c.benchDir)
	c.wrkScript = filepath.Join(c.benchDir, "wrk/report.lua")
	for _, d := range []string{c.out, c.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	c.pidfile = filepath.Join(c.work, "server-pids")
	c.port = 18000 + int(time.Now().UnixNano()%1000)
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is not installed (bench/run installs it with apt-get)")
	}

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigc
		fmt.Fprintf(os.Stderr, "\nbenchctl: %v: stopping every server and exiting\n", s)
		c.killAll()
		os.Exit(130)
	}()
	defer c.killAll()

	specs, skipped := c.servers()
	for _, s := range skipped {
		c.notes = append(c.notes, "skipped "+s)
		fmt.Println("note: skipped", s)
	}
	meta := c.meta()
	meta["started"] = time.Now().UTC().Format(time.RFC3339)
	began := time.Now()

	if err := c.throughput(specs); err != nil {
		return err
	}
	if c.lifecycle {
		if err := c.lifecycleAll(specs); err != nil {
			return err
		}
	}
	meta["finished"] = time.Now().UTC().Format(time.RFC3339)
	meta["elapsed_s"] = int(time.Since(began).Seconds())
	meta["remeasured"] = c.remeasured
	meta["busy_starts"] = c.busyStarts
	meta["notes"] = c.notes
	b, _ := json.MarshalIndent(meta, "", "  ")
	return os.WriteFile(filepath.Join(c.out, "meta.json"), b, 0o644)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func rotate[T any](s []T, k int) []T {
	if len(s) == 0 {
		return s
	}
	k %= len(s)
	return append(append([]T{}, s[k:]...), s[:k]...)
}

// csvWriter appends rows to a CSV file with a header.
type csvWriter struct {
	f *os.File
	w *csv.Writer
}

func newCSV(path string, header []string) (*csvWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := csv.NewWriter(f)
	w.Write(header)
	w.Flush()
	return &csvWriter{f: f, w: w}, w.Error()
}

func (c *csvWriter) row(vals ...any) {
	rec := make([]string, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case float64:
			rec[i] = strconv.FormatFloat(v, 'f', -1, 64)
		default:
			rec[i] = fmt.Sprint(v)
		}
	}
	c.w.Write(rec)
	c.w.Flush()
}

func (c *csvWriter) close() error {
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return err
	}
	return c.f.Close()
}

var throughputHeader = []string{"round", "placement", "handler", "mode", "server", "pos", "rps", "requests",
	"p50_ms", "p99_ms", "max_ms", "connect_err", "read_err", "write_err", "timeout_err", "non2xx", "errors",
	"server_cpu_pct", "wrk_cpu_pct", "foreign_pct", "gomaxprocs",
	"ctxsw_per_req", "syscalls_per_req", "cpu_us_per_req", "handshake_cpu_pct", "note", "superseded"}

// wrkResult is one wrk run, parsed from the WRKRESULT line report.lua prints.
type wrkResult struct {
	requests, durUs, connect, read, write, status, timeout, p50, p99, max int64
	cpu                                                                   time.Duration // wrk's user+sys
}

func (w wrkResult) rps() float64 {
	if w.durUs == 0 {
		return 0
	}
	return float64(w.requests) / (float64(w.durUs) / 1e6)
}

func (w wrkResult) errors() int64 { return w.connect + w.read + w.write + w.timeout + w.status }

// placement is where the server tree and the load generator run.
type placement struct {
	pin     bool // server tree on -server-cpu, wrk on -wrk-cpu
	threads int  // wrk -t: with one thread every SYN arrives on that thread's CPU
}

// placementOf maps a placement name to what it means.
func placementOf(name string) (placement, error) {
	switch name {
	case "shared-t1":
		return placement{threads: 1}, nil
	case "shared-t2":
		return placement{threads: 2}, nil
	case "pinned":
		return placement{pin: true, threads: 1}, nil
	}
	return placement{}, fmt.Errorf("unknown placement %q (want shared-t1, shared-t2 or pinned)", name)
}

// runWrk runs wrk against addr for dur seconds, placed as pl says.
func (c *config) runWrk(pl placement, addr string, dur int, closeConn bool) (wrkResult, error) {
	argv := []string{"wrk", "-t" + strconv.Itoa(pl.threads), "-c" + strconv.Itoa(c.conns), "-d" + strconv.Itoa(dur) + "s", "-s", c.wrkScript}
	if closeConn {
		argv = append(argv, "-H", "Connection: close")
	}
	argv = append(argv, "http://"+addr+"/")
	if pl.pin {
		argv = append([]string{"taskset", "-c", c.wrkCPU}, argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(dur+15)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var res wrkResult
	if cmd.ProcessState != nil {
		res.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return res, fmt.Errorf("wrk: %v: %s", err, strings.TrimSpace(out.String()))
	}
	for _, line := range strings.Split(out.String(), "\n") {
		rest, ok := strings.CutPrefix(line, "WRKRESULT ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "requests":
				res.requests = n
			case "duration_us":
				res.durUs = n
			case "connect":
				res.connect = n
			case "read":
				res.read = n
			case "write":
				res.write = n
			case "status":
				res.status = n
			case "timeout":
				res.timeout = n
			case "p50_us":
				res.p50 = n
			case "p99_us":
				res.p99 = n
			case "max_us":
				res.max = n
			}
		}
		return res, nil
	}
	return res, fmt.Errorf("wrk printed no WRKRESULT line: %s", strings.TrimSpace(out.String()))
}

// throughput runs the interleaved rounds.
// unit is one server's turn in a round: start, warm up, keep-alive run,
// Connection: close run, stop.
type unit struct {
	round          int
	placement, hdl string
	pos            int
	spec           serverSpec
}

// unitTime is the nominal time of a turn: warm-up, two runs, and about
// 1 s to start, check and stop the server.
func (c *config) unitTime(u unit) time.Duration {
	d := c.dur
	if u.hdl == "ok" {
		d = c.durOK
	}
	return time.Duration(c.warmup+2*d)*time.Second + time.Second
}

// slack is how much time the run can still spend waiting for a quiet
// machine or re-measuring, given what remains to be done.
func (c *config) slack(remaining time.Duration) time.Duration {
	return time.Until(c.deadline) - remaining
}

func (c *config) throughput(specs []serverSpec) error {
	w, err := newCSV(filepath.Join(c.out, "throughput.csv"), throughputHeader)
	if err != nil {
		return err
	}
	defer w.close()
	var units []unit
	for r := 0; r < c.rounds; r++ {
		for _, pl := range rotate(c.placements, r) {
			for _, h := range rotate(c.handlers, r) {
				var list []serverSpec
				for _, s := range specs {
					if s.serves(h) {
						list = append(list, s)
					}
				}
				for pos, s := range rotate(list, r) {
					units = append(units, unit{r + 1, pl, h, pos, s})
				}
			}
		}
	}
	left := make([]time.Duration, len(units)+1) // nominal time of units[i:] plus the lifecycle part
	left[len(units)] = c.lifecycleEstimate()
	for i := len(units) - 1; i >= 0; i-- {
		left[i] = left[i+1] + c.unitTime(units[i])
	}
	fmt.Printf("throughput: %d server starts; nominal time with lifecycle %s; time budget %s\n",
		len(units), left[0].Round(time.Second), time.Until(c.deadline).Round(time.Second))
	for i, u := range units {
		prefix := fmt.Sprintf("[%d/%d] round %d %-6s %-5s %-6s", i+1, len(units), u.round, u.placement, u.hdl, u.spec.name)
		for attempt := 0; ; attempt++ {
			c.waitQuiet(prefix, left[i])
			rows, foreign := c.measureUnit(u, prefix)
			// A run during which other processes took a real share of the
			// CPUs is measured again (fresh server) while the time budget
			// allows; the first attempt stays in the CSV, marked superseded.
			retry := foreign > busyPct && attempt < c.retries &&
				c.slack(left[i]) > c.unitTime(u)
			for _, r := range rows {
				if retry {
					r[len(r)-1] = "1"
				}
				w.row(r...)
			}
			if !retry {
				break
			}
			c.remeasured++
			fmt.Printf("%s: other processes used %.0f%% of the CPUs during the run; measuring again\n", prefix, foreign)
		}
	}
	return nil
}

// measureUnit runs one unit and returns its CSV rows and the larger of the
// two runs' foreign CPU share.
func (c *config) measureUnit(u unit, prefix string) ([][]any, float64) {
	d := c.dur
	if u.hdl == "ok" {
		d = c.durOK
	}
	pl, _ := placementOf(u.placement) // validated at start
	srv, err := c.start(u.spec, u.hdl, pl.pin)
	if err != nil {
		fmt.Printf("%s: START FAILED: %v\n", prefix, err)
		c.notes = append(c.notes, fmt.Sprintf("round %d %s %s %s: start failed: %v", u.round, u.placement, u.hdl, u.spec.name, err))
		var rows [][]any
		for _, mode := range []string{"ka", "close"} {
			row := make([]any, len(throughputHeader))
			for i := range row {
				row[i] = ""
			}
			copy(row, []any{u.round, u.placement, u.hdl, mode, u.spec.name, u.pos})
			row[len(row)-2] = "start failed"
			rows = append(rows, row)
		}
		return rows, 0
	}
	defer srv.stop()
	line := prefix + ":"
	if _, err := c.runWrk(pl, srv.addr, c.warmup, false); err != nil {
		line += " warm-up error: " + err.Error()
	}
	var rows [][]any
	maxForeign := 0.0
	for _, mode := range []string{"ka", "close"} {
		row, res, foreign := c.measureMode(u, pl, srv, d, mode)
		rows = append(rows, row)
		maxForeign = max(maxForeign, foreign)
		line += fmt.Sprintf(" %s %6.0f rps p99 %5.1f ms err %d cs/req %s foreign %3.0f%%;", mode, res.rps(), float64(res.p99)/1000, res.errors(), row[len(row)-6], foreign)
	}
	fmt.Printf("%s (time left %s)\n", line, time.Until(c.deadline).Round(time.Second))
	return rows, maxForeign
}

// measureMode is one wrk run of a unit, with the server's counters around
// it: the CSV row, wrk's result and the foreign CPU share.
func (c *config) measureMode(u unit, pl placement, srv *running, d int, mode string) ([]any, wrkResult, float64) {
	before, tasks := snap(srv.pid), treeCounters(srv.pid)
	perf := startPerf(srv.pid, time.Duration(d+2)*time.Second)
	res, err := c.runWrk(pl, srv.addr, d, mode == "close")
	counted := perf.stop()
	after, tasksAfter := snap(srv.pid), treeCounters(srv.pid)
	note := ""
	if err != nil {
		note = strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Printf("%s %s %s %s: %v\n", u.placement, u.hdl, u.spec.name, mode, err)
		c.notes = append(c.notes, fmt.Sprintf("round %d %s %s %s %s: %s", u.round, u.placement, u.hdl, u.spec.name, mode, note))
	}
	select {
	case <-srv.done:
		note = strings.TrimSpace(note + " server exited during the run")
	default:
	}
	dt := float64(after.total - before.total)
	srvPct, wrkPct, foreign := 0.0, 0.0, 0.0
	if dt > 0 {
		tick := 1e9 / 100.0 // USER_HZ is 100 on Linux
		wrkJ := float64(res.cpu) / tick
		srvPct = 100 * float64(after.tree-before.tree) / dt
		wrkPct = 100 * wrkJ / dt
		foreign = 100*float64(after.busy-before.busy)/dt - srvPct - wrkPct
	}
	sys, syn := "", ""
	if counted.ok {
		sys, syn = perReq(0, counted.syscalls, res.requests, 2), shares(counted.handshakes)
	}
	row := []any{u.round, u.placement, u.hdl, mode, u.spec.name, u.pos, fmt.Sprintf("%.0f", res.rps()), res.requests,
		ms(res.p50), ms(res.p99), ms(res.max), res.connect, res.read, res.write, res.timeout, res.status, res.errors(),
		fmt.Sprintf("%.0f", srvPct), fmt.Sprintf("%.0f", wrkPct), fmt.Sprintf("%.0f", foreign), srv.gmp,
		perReq(tasks.ctxsw, tasksAfter.ctxsw, res.requests, 2), sys, perReq(tasks.cpuNs/1000, tasksAfter.cpuNs/1000, res.requests, 1),
		syn, note, ""}
	return row, res, foreign
}

// lifecycleEstimate is the nominal time of the lifecycle part.
func (c *config) lifecycleEstimate() time.Duration {
	if !c.lifecycle {
		return 0
	}
	d := 3*c.supDur + time.Duration(c.reforkReps)*1500*time.Millisecond + 10*time.Second
	if slices.Contains(c.steps, "scrape") {
		for _, n := range c.scrapeWorkers {
			d += c.scrapeDur + time.Duration(c.scrapeN)*10*time.Millisecond + 3*time.Second + time.Duration(n)*50*time.Millisecond
		}
	}
	if !c.quick {
		d += 5*4500*time.Millisecond + 5*3*time.Second
	} else {
		d += 2 * 3 * time.Second
	}
	return d
}

func ms(us int64) string { return fmt.Sprintf("%.2f", float64(us)/1000) }

// meta describes the machine and the run for the report.
func (c *config) meta() map[string]any {
	cmdOut := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil && len(out) == 0 {
			return "not available"
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	cpuModel := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	memTotal := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		memTotal = strings.Join(strings.Fields(line)[1:], " ")
	}
	versions := map[string]string{
		"go":    runtime.Version(),
		"wrk":   cmdOut("wrk", "-v"),
		"nginx": "not available",
		"node":  "not available",
	}
	if _, err := exec.LookPath("nginx"); err == nil {
		versions["nginx"] = cmdOut("nginx", "-v")
	}
	if _, err := exec.LookPath("node"); err == nil {
		versions["node"] = cmdOut("node", "--version")
	}
	sysctls := map[string]string{}
	for _, s := range []string{"net.ipv4.tcp_migrate_req", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
		"net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse"} {
		sysctls[s] = readSysctl(s)
	}
	rev := strings.TrimSpace(cmdOut("git", "-C", c.benchDir, "describe", "--always", "--dirty", "--abbrev=12"))
	if rev == "not available" || strings.HasPrefix(rev, "fatal") {
		rev = "no commit yet"
	}
	return map[string]any{
		"command":        c.command,
		"quick":          c.quick,
		"rounds":         c.rounds,
		"dur_ok":         c.durOK,
		"dur":            c.dur,
		"warmup":         c.warmup,
		"conns":          c.conns,
		"workers":        c.workers,
		"placements":     c.placements,
		"handlers":       c.handlers,
		"servers":        c.serverNames,
		"poolM_handlers": c.poolMHandlers,
		"poolS_handlers": c.poolSHandlers,
		"scrape_workers": c.scrapeWorkers,
		"scrape_n":       c.scrapeN,
		"scrape_dur_s":   c.scrapeDur.Seconds(),
		"server_cpu":     c.serverCPU,
		"wrk_cpu":        c.wrkCPU,
		"kernel":         readSysctl("kernel.osrelease"),
		"cpu":            cpuModel,
		"ncpu":           runtime.NumCPU(),
		"mem":            memTotal,
		"versions":       versions,
		"sysctls":        sysctls,
		"revision":       rev,
		"rolling":        c.rolling,
		"rolling_note":   c.rollingNote,
		"retries":        c.retries,
	}
}

// waitQuiet holds the next measurement while other processes keep the
// machine busy (no server of ours runs at this point), at most quietWait
// and never into the time that the rest of the run needs. The foreign_pct
// column still records what happened during each run.
func (c *config) waitQuiet(prefix string, remaining time.Duration) {
	began := time.Now()
	said := false
	for {
		b0, t0 := sysCPU()
		time.Sleep(150 * time.Millisecond)
		b1, t1 := sysCPU()
		busy := 0.0
		if t1 > t0 {
			busy = 100 * float64(b1-b0) / float64(t1-t0)
		}
		if busy <= c.quietMax {
			return
		}
		if time.Since(began) > c.quietWait || c.slack(remaining) <= 0 {
			msg := fmt.Sprintf("%s: machine still busy (%.0f%% of all CPUs used by other processes); measuring anyway", prefix, busy)
			fmt.Println(msg)
			c.busyStarts++
			return
		}
		if !said {
			fmt.Printf("%s: other processes use %.0f%% of all CPUs; waiting\n", prefix, busy)
			said = true
		}
		time.Sleep(350 * time.Millisecond)
	}
}
