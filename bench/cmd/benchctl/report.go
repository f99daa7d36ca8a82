package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// run is one row of throughput.csv.
type run struct {
	round                         int
	placement, handler, mode, srv string
	ok                            bool // the server started and wrk produced a result
	rps, p50, p99                 float64
	srvCPU                        float64 // server tree CPU, % of all CPUs
	errs                          int64
	foreign                       float64
	gmp, note                     string
	ctxsw, syscalls, cpuUs        float64 // per request; NaN when not measured
	handshakes                    string  // % of handshakes per CPU, "52/48"
}

// busyPct: a run in which other processes used more than this share of the
// machine is counted as taken on a busy box.
const busyPct = 15

type cellKey struct{ handler, placement, mode, srv string }

func reportMain(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "", "directory with throughput.csv, lifecycle.csv, meta.json")
	md := fs.String("md", "", "markdown file to write")
	svg := fs.String("svg", "", "SVG plot to write (linked from the markdown by its base name)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *md == "" {
		return errors.New("-in and -md are required")
	}
	var meta map[string]any
	b, err := os.ReadFile(filepath.Join(*in, "meta.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return err
	}
	runs, err := readRuns(filepath.Join(*in, "throughput.csv"))
	if err != nil {
		return err
	}
	life, err := readCSV(filepath.Join(*in, "lifecycle.csv"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	rep := newReport(meta, runs, life)
	var sb strings.Builder
	svgName := ""
	if *svg != "" {
		rel, err := filepath.Rel(filepath.Dir(*md), *svg)
		if err != nil {
			rel = filepath.Base(*svg)
		}
		svgName = rel
		if err := os.WriteFile(*svg, []byte(rep.plot()), 0o644); err != nil {
			return err
		}
	}
	rep.markdown(&sb, svgName)
	return os.WriteFile(*md, []byte(sb.String()), 0o644)
}

func readCSV(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) > 0 {
		recs = recs[1:] // header
	}
	return recs, nil
}

func readRuns(path string) ([]run, error) {
	recs, err := readCSV(path)
	if err != nil {
		return nil, err
	}
	idx := map[string]int{}
	for i, h := range throughputHeader {
		idx[h] = i
	}
	var out []run
	for _, rec := range recs {
		if len(rec) < len(throughputHeader)-1 {
			continue
		}
		get := func(k string) string { return rec[idx[k]] }
		f := func(k string) float64 { v, _ := strconv.ParseFloat(get(k), 64); return v }
		r := run{placement: get("placement"), handler: get("handler"), mode: get("mode"), srv: get("server"),
			gmp: get("gomaxprocs"), note: get("note")}
		if idx["superseded"] < len(rec) && get("superseded") == "1" {
			continue // re-measured because the machine was busy; see meta "remeasured"
		}
		r.round, _ = strconv.Atoi(get("round"))
		r.ok = get("rps") != "" && get("requests") != "0"
		r.rps, r.p50, r.p99, r.foreign = f("rps"), f("p50_ms"), f("p99_ms"), f("foreign_pct")
		r.srvCPU = f("server_cpu_pct")
		r.errs, _ = strconv.ParseInt(get("errors"), 10, 64)
		opt := func(k string) float64 {
			if v, err := strconv.ParseFloat(get(k), 64); err == nil {
				return v
			}
			return math.NaN()
		}
		r.ctxsw, r.syscalls, r.cpuUs = opt("ctxsw_per_req"), opt("syscalls_per_req"), opt("cpu_us_per_req")
		r.handshakes = get("handshake_cpu_pct")
		out = append(out, r)
	}
	return out, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minMax(v []float64) (float64, float64) {
	if len(v) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(v), slices.Max(v)
}

// cell aggregates the runs of one (handler, placement, mode, server).
type cell struct {
	n, failed              int
	rps, p50, p99, foreign []float64
	ratio, p99ratio        []float64 // per round, vs single in the same round
	errs                   []float64
	ctxsw, syscalls, cpuUs []float64
	handshakes             []string
	errTotal               int64
	busy                   int // runs with foreign_pct above busyPct
	gmp                    map[string]bool
}

type report struct {
	baseline   map[string]string // server → the server its ratios are to, when not single
	meta       map[string]any
	cells      map[cellKey]*cell
	handlers   []string
	placements []string
	modes      []string
	servers    []string
	life       [][]string
	notes      []string
	runs       []run
}

var (
	knownHandlers   = []string{"ok", "alloc", "sleep"}
	knownPlacements = []string{"shared-t1", "shared-t2", "pinned", "shared"}
	knownModes      = []string{"ka", "close"}
	knownServers    = []string{"single", "singleAA", "singleK", "singleD", "pool", "poolK", "poolSh", "poolM", "poolS", "pool1", "poolN", "poolC", "nginx", "node"}
)

// pairedBaseline is the single process with the same runtime setting as
// srv, or "": such a server is compared with it when the run has it.
func pairedBaseline(srv string) string {
	if srv == "poolK" {
		return "singleK"
	}
	return ""
}

// baselineOf is the server whose runs srv's ratios are to.
func (rep *report) baselineOf(srv string) string {
	if b, ok := rep.baseline[srv]; ok {
		return b
	}
	return "single"
}

func ordered(known []string, present map[string]bool) []string {
	var out []string
	for _, k := range known {
		if present[k] {
			out = append(out, k)
		}
	}
	for _, k := range sortedKeys(present) {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

func newReport(meta map[string]any, runs []run, life [][]string) *report {
	rep := &report{meta: meta, cells: map[cellKey]*cell{}, life: life, runs: runs}
	hs, ps, ms, ss := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	type roundKey struct {
		round                         int
		handler, placement, mode, srv string
	}
	base := map[roundKey]run{}
	for _, r := range runs {
		if r.ok {
			base[roundKey{r.round, r.handler, r.placement, r.mode, r.srv}] = r
		}
		ss[r.srv] = true
	}
	rep.baseline = map[string]string{}
	for srv := range ss {
		if b := pairedBaseline(srv); b != "" && ss[b] {
			rep.baseline[srv] = b
		}
	}
	for _, r := range runs {
		hs[r.handler], ps[r.placement], ms[r.mode], ss[r.srv] = true, true, true, true
		k := cellKey{r.handler, r.placement, r.mode, r.srv}
		c := rep.cells[k]
		if c == nil {
			c = &cell{gmp: map[string]bool{}}
			rep.cells[k] = c
		}
		c.n++
		if !r.ok {
			c.failed++
			continue
		}
		c.rps = append(c.rps, r.rps)
		c.p50 = append(c.p50, r.p50)
		c.p99 = append(c.p99, r.p99)
		c.foreign = append(c.foreign, r.foreign)
		if r.foreign > busyPct {
			c.busy++
		}
		c.errs = append(c.errs, float64(r.errs))
		c.errTotal += r.errs
		c.addCosts(r)
		if r.gmp != "" {
			c.gmp[r.gmp] = true
		}
		if b, ok := base[roundKey{r.round, r.handler, r.placement, r.mode, rep.baselineOf(r.srv)}]; ok && b.rps > 0 {
			c.ratio = append(c.ratio, r.rps/b.rps)
			if b.p99 > 0 {
				c.p99ratio = append(c.p99ratio, r.p99/b.p99)
			}
		}
	}
	rep.handlers = ordered(knownHandlers, hs)
	rep.placements = ordered(knownPlacements, ps)
	rep.modes = ordered(knownModes, ms)
	rep.servers = ordered(knownServers, ss)
	return rep
}

// addCosts records a run's per-request costs, those that were measured.
func (c *cell) addCosts(r run) {
	for _, x := range []struct {
		v   float64
		dst *[]float64
	}{{r.ctxsw, &c.ctxsw}, {r.syscalls, &c.syscalls}, {r.cpuUs, &c.cpuUs}} {
		if !math.IsNaN(x.v) {
			*x.dst = append(*x.dst, x.v)
		}
	}
	if r.handshakes != "" {
		c.handshakes = append(c.handshakes, r.handshakes)
	}
}

// handshakeStr is the per-CPU handshake shares of a cell's runs: the one
// value when every run agrees, else each run's.
func (c *cell) handshakeStr() string {
	if len(c.handshakes) == 0 {
		return "–"
	}
	u := slices.Compact(slices.Sorted(slices.Values(c.handshakes)))
	if len(u) == 1 {
		return u[0]
	}
	return strings.Join(c.handshakes, " ")
}

func f0(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func f2(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func f1(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func ratioStr(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	lo, hi := minMax(v)
	return fmt.Sprintf("%s [%s..%s]", f2(median(v)), f2(lo), f2(hi))
}

var modeName = map[string]string{"ka": "keep-alive", "close": "Connection: close"}

var serverDesc = map[string]string{
	"single":   "one net/http process, default GOMAXPROCS (the baseline)",
	"singleAA": "`single` started again in every round: the A/A control, whose ratio to `single` is the noise of the run",
	"singleK":  "`single` with `GODEBUG=schedtrace=2147483647` (sysmon never deep-sleeps; see bench/SYSMON.md)",
	"singleD":  "`single` with `TCP_DEFER_ACCEPT` on its listener",
	"poolK":    "`pool` with `Options.KeepSysmonAwake` (every worker runs with `GODEBUG=schedtrace=2147483647`: sysmon never deep-sleeps); its ratios are to `singleK`, the single process with the same setting, when the run has it",
	"poolSh":   "`pool` with `Options.Migration = \"shared\"`: one listening socket, every worker accepts from it",
	"pool":     "clusterflock.Run, Workers = CPU count, library default GOMAXPROCS per worker",
	"pool1":    "clusterflock.Run, Workers = CPU count, Options.GOMAXPROCS = 1",
	"poolN":    "clusterflock.Run, Workers = CPU count, Options.GOMAXPROCS = CPU count (naive)",
	"poolC":    "clusterflock.Run, Workers = CPU count, Options.Migration = \"cbpf\" (supervisor-held sockets, classic BPF steering)",
	"poolM":    "clusterflock.Run, Workers = CPU count, Options.Metrics = &metrics.Exporter{Addr: …} (the supervisor serves /metrics; every request counted: in-flight gauge, duration histogram, counter by code)",
	"poolS":    "clusterflock.Run, Workers = CPU count, Options.StuckTimeout = 30s (every request carries pprof goroutine labels and a progress-counting ResponseWriter)",
	"nginx":    "nginx, one worker per CPU, `listen … reuseport`, `return 200 'ok'` (the ceiling)",
	"node":     "node `cluster`, one worker per CPU, default round-robin: the primary accepts and hands off (the Node original's model)",
}

var handlerDesc = map[string]string{
	"ok":    "trivial: writes `ok`",
	"alloc": "allocation-heavy: allocates and drops ~320 KB in 1280 chunks per request, writes `ok`",
	"sleep": "I/O-bound: sleeps 1 ms, writes `ok`",
}

func (rep *report) metaStr(k string) string {
	v, ok := rep.meta[k]
	if !ok {
		return "?"
	}
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case []any:
		var s []string
		for _, x := range v {
			s = append(s, fmt.Sprint(x))
		}
		return strings.Join(s, ", ")
	}
	return fmt.Sprint(v)
}

func (rep *report) metaMap(k string) map[string]string {
	out := map[string]string{}
	if m, ok := rep.meta[k].(map[string]any); ok {
		for kk, v := range m {
			out[kk] = fmt.Sprint(v)
		}
	}
	return out
}

func (rep *report) markdown(sb *strings.Builder, svgName string) {
	w := func(format string, a ...any) { fmt.Fprintf(sb, format, a...) }
	quick := rep.meta["quick"] == true
	w("# clusterflock benchmark results\n\n")
	if quick {
		w("> **Smoke run (`-quick`)**: one round, 1 s per measurement, shared placement only. The figures show the harness works; they are not evidence for any claim.\n\n")
	}
	w("Produced by `%s` (from the repository root), %s → %s (%s s). Library revision: %s.\n\n",
		rep.metaStr("command"), rep.metaStr("started"), rep.metaStr("finished"), rep.metaStr("elapsed_s"), rep.metaStr("revision"))
	v := rep.metaMap("versions")
	sc := rep.metaMap("sysctls")
	wrkV, _, _ := strings.Cut(v["wrk"], " Copyright")
	mem := rep.metaStr("mem")
	if kb, err := strconv.ParseFloat(strings.TrimSuffix(mem, " kB"), 64); err == nil {
		mem = fmt.Sprintf("%.0f GiB", kb/(1<<20))
	}
	w("**Machine:** %s vCPU (%s), %s RAM, Linux %s. %s; %s; %s; node %s.\n",
		rep.metaStr("ncpu"), rep.metaStr("cpu"), mem, rep.metaStr("kernel"),
		v["go"], wrkV, strings.TrimPrefix(v["nginx"], "nginx version: "), v["node"])
	w("sysctl: tcp_migrate_req=%s, somaxconn=%s, tcp_max_syn_backlog=%s, ip_local_port_range=%s, tcp_tw_reuse=%s.\n\n",
		sc["net.ipv4.tcp_migrate_req"], sc["net.core.somaxconn"], sc["net.ipv4.tcp_max_syn_backlog"], sc["net.ipv4.ip_local_port_range"], sc["net.ipv4.tcp_tw_reuse"])
	w("**Method** (`shared/BENCH.md`): %s interleaved rounds; in each round the server order rotates and every server starts fresh, gets a %s s keep-alive warm-up, then `wrk -c%s -d%ss` keep-alive and then with `-H 'Connection: close'` (%s s for the alloc and sleep handlers). Placements: **shared-t1** = no pinning, `wrk -t1` (one client thread: every SYN lands on its CPU); **shared-t2** = no pinning, `wrk -t2`; **pinned** = server tree on CPU %s (`taskset`), `wrk -t1` on CPU %s. Workers = %s for every multi-process server. Before each turn the harness waits (bounded) while other processes keep the CPUs busy; a turn during which they used more than %d %% of the CPUs is measured again with a fresh server, up to %s times, while the time budget allows. In the pinned placement the multi-process servers keep all their workers on the one CPU. `bench/README.md` interprets the figures.\n\n",
		rep.metaStr("rounds"), rep.metaStr("warmup"), rep.metaStr("conns"), rep.metaStr("dur_ok"), rep.metaStr("dur"),
		rep.metaStr("server_cpu"), rep.metaStr("wrk_cpu"), rep.metaStr("workers"), busyPct, rep.metaStr("retries"))

	// Headline: trivial handler ratios.
	w("## Headline: throughput relative to the single process\n\n")
	w("Per-round ratio of requests/s to `single` in the same round: median [min..max]. p99 ratio likewise (below 1 = lower latency than `single`). `singleAA` is the A/A control, `single` started again in the same rounds: its spread is the noise of this run, and a ratio inside it is no difference.\n\n")
	for _, h := range rep.handlers {
		var srvs []string
		for _, s := range rep.servers {
			if s != "single" && rep.hasServer(h, s) {
				srvs = append(srvs, s)
			}
		}
		if len(srvs) == 0 {
			continue
		}
		w("**%s handler** (%s)\n\n| placement | mode |", h, handlerDesc[h])
		for _, s := range srvs {
			if b := rep.baselineOf(s); b != "single" {
				w(" %s rps vs %s | %s p99 vs %s |", s, b, s, b)
				continue
			}
			w(" %s rps | %s p99 |", s, s)
		}
		w("\n|---|---|")
		for range srvs {
			w("---|---|")
		}
		w("\n")
		for _, p := range rep.placements {
			for _, m := range rep.modes {
				if rep.cells[cellKey{h, p, m, "single"}] == nil {
					continue
				}
				w("| %s | %s |", p, modeName[m])
				for _, s := range srvs {
					c := rep.cells[cellKey{h, p, m, s}]
					if c == nil {
						w(" – | – |")
						continue
					}
					w(" %s | %s |", ratioStr(c.ratio), ratioStr(c.p99ratio))
				}
				w("\n")
			}
		}
		w("\n")
	}
	if svgName != "" {
		w("![requests/s relative to the single process](%s)\n\n", svgName)
	}

	w("## Throughput and latency, all cells\n\n")
	w("n = rounds measured (failed starts are listed under Errors). rps: median and min–max over rounds. p50/p99: medians over rounds, ms. errs: socket errors + non-2xx per run, median (total). foreign: CPU used by neither the server tree nor wrk (nor, in practice, the harness), %% of all CPUs, median over rounds; in brackets the runs above %d %%, where something else on the machine competed for the CPUs. GOMAXPROCS as each answering process reported it. Per-request costs of the server tree (all its threads), medians over rounds, from the same runs: context switches and CPU time from /proc; syscalls (perf `raw_syscalls:sys_enter` on the server's threads) and where the passive TCP handshakes completed, %% per CPU (perf `sock:inet_sock_set_state`, system-wide; on loopback that is the CPU of the client thread that sent the SYN) — \"–\" when perf is not installed. Counting syscalls puts every syscall on the machine on its slow path, for every server alike.\n\n", busyPct)
	for _, h := range rep.handlers {
		w("### %s handler\n\n", h)
		w("| placement | mode | server | n | vs single, per round | median rps | min–max rps | p50 ms | p99 ms | errs med (total) | foreign %% med (busy runs) | GOMAXPROCS | ctxsw/req | syscalls/req | CPU µs/req | handshakes by CPU %% |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, p := range rep.placements {
			for _, m := range rep.modes {
				for _, s := range rep.servers {
					c := rep.cells[cellKey{h, p, m, s}]
					if c == nil {
						continue
					}
					lo, hi := minMax(c.rps)
					gm := strings.Join(sortedKeys(c.gmp), ", ")
					if gm == "" {
						gm = "–"
					}
					n := strconv.Itoa(len(c.rps))
					if c.failed > 0 {
						n += fmt.Sprintf(" (+%d failed)", c.failed)
					}
					w("| %s | %s | %s | %s | %s | %s | %s–%s | %s | %s | %s (%d) | %s (%d) | %s | %s | %s | %s | %s |\n",
						p, m, s, n, rep.ratioVs(s, c.ratio), f0(median(c.rps)), f0(lo), f0(hi), f2(median(c.p50)), f1(median(c.p99)),
						f0(median(c.errs)), c.errTotal, f0(median(c.foreign)), c.busy, gm,
						f2(median(c.ctxsw)), f1(median(c.syscalls)), f0(median(c.cpuUs)), c.handshakeStr())
				}
			}
		}
		w("\n")
	}

	rep.lifecycleMarkdown(sb)
	rep.metricsMarkdown(sb)
	rep.stuckMarkdown(sb)

	w("## Servers and handlers\n\n")
	for _, s := range rep.servers {
		w("- `%s`: %s\n", s, serverDesc[s])
	}
	for _, h := range rep.handlers {
		w("- handler `%s`: %s\n", h, handlerDesc[h])
	}
	w("\nThe Go servers are one program (`bench/servers/goserver`) with the same handler and the same `http.Server` settings in every mode; every response carries `X-Pid`.\n\n")

	w("## Errors and notes\n\n")
	total := int64(0)
	failed := 0
	for _, c := range rep.cells {
		total += c.errTotal
		failed += c.failed
	}
	w("- Throughput runs: %d socket errors + non-2xx in total; %d measurements without a result (failed start or wrk error).\n", total, failed)
	w("- Server turns measured again because other processes used more than %d %% of the CPUs during them: %s (the first attempts stay in `throughput.csv`, marked `superseded`). Turns started while the machine was still busy after waiting: %s.\n",
		busyPct, rep.metaStr("remeasured"), rep.metaStr("busy_starts"))
	if notes, ok := rep.meta["notes"].([]any); ok {
		for _, n := range notes {
			w("- %s\n", n)
		}
	}
	if failed == 0 && total == 0 {
		w("- No run had an error.\n")
	}
}

// ratioVs is ratioStr, naming the baseline when it is not single.
func (rep *report) ratioVs(srv string, v []float64) string {
	if b := rep.baselineOf(srv); b != "single" {
		return ratioStr(v) + " vs " + b
	}
	return ratioStr(v)
}

func (rep *report) hasServer(h, s string) bool {
	for k := range rep.cells {
		if k.handler == h && k.srv == s {
			return true
		}
	}
	return false
}

// lifeVals collects lifecycle values: kind → key → per-rep strings.
func (rep *report) lifeVals() map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for _, r := range rep.life {
		if len(r) < 4 {
			continue
		}
		if out[r[0]] == nil {
			out[r[0]] = map[string][]string{}
		}
		out[r[0]][r[2]] = append(out[r[0]][r[2]], r[3])
	}
	return out
}

func nums(s []string) []float64 {
	var out []float64
	for _, x := range s {
		if v, err := strconv.ParseFloat(x, 64); err == nil {
			out = append(out, v)
		}
	}
	return out
}

func sum(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t
}

func (rep *report) lifecycleMarkdown(sb *strings.Builder) {
	w := func(format string, a ...any) { fmt.Fprintf(sb, format, a...) }
	lv := rep.lifeVals()
	w("## Lifecycle costs (`pool`, trivial handler, shared placement)\n\n")
	if len(lv) == 0 || (len(lv) == 1 && lv["scrape"] != nil) {
		w("Not measured in this run.\n\n")
		return
	}
	if rf := lv["refork"]; rf != nil {
		s := nums(rf["serving_ms"])
		fk := nums(rf["fork_seen_ms"])
		pe := nums(rf["probe_errors"])
		lo, hi := minMax(s)
		flo, fhi := minMax(fk)
		withErr := 0
		for _, x := range pe {
			if x > 0 {
				withErr++
			}
		}
		w("**Refork** (idle pool; SIGKILL the lowest-PID worker, then fresh connections one at a time, 250 ms timeout each, until a new PID answers): n = %d, **serving median %s ms, max %s ms** (min %s). New PID visible among the supervisor's children after %s ms median (%s–%s). Probe errors: %s in total, in %d of %d reps. Missing replacements: %d.\n\n",
			len(rf["serving_ms"]), f1(median(s)), f1(hi), f1(lo), f1(median(fk)), f1(flo), f1(fhi), f0(sum(pe)), withErr, len(pe), len(rf["serving_ms"])-len(s))
		w("All serving times (ms): %s\n\n", strings.Join(rf["serving_ms"], " "))
	}
	for _, k := range []struct{ kind, title string }{
		{"kill_close", "SIGKILL of a worker under load, Connection: close"},
		{"kill_ka", "SIGKILL of a worker under load, keep-alive"},
	} {
		kv := lv[k.kind]
		if kv == nil {
			continue
		}
		w("**%s** (64 raw closed-loop clients, no retries; the lowest-PID worker is killed 1 s in):\n\n", k.title)
		w("| rep | failed / total | failure kinds | retryable* | replacement serving ms |\n|---|---|---|---|---|\n")
		for i := range kv["total"] {
			w("| %d | %s / %s | %s | %s | %s |\n", i+1, at(kv["failed"], i), at(kv["total"], i), orDash(at(kv["kinds"], i)), at(kv["retryable"], i), at(kv["serving_ms"], i))
		}
		if k.kind == "kill_ka" {
			w("\nWith keep-alive the clients of the killed worker reconnect at once to the surviving worker and stay there, so the replacement usually gets no connection during the run (NA); its start-up is the refork figure above.\n")
		}
		w("\n")
	}
	if rs := lv["rolling"]; rs != nil && len(rs["skipped"]) > 0 {
		w("**Rolling restart (SIGHUP):** %s.\n\n", rs["skipped"][0])
	}
	for _, k := range []struct{ kind, title string }{
		{"rolling_close", "Rolling restart (SIGHUP) under load, Connection: close"},
		{"rolling_ka", "Rolling restart (SIGHUP) under load, keep-alive"},
	} {
		kv := lv[k.kind]
		if kv == nil {
			continue
		}
		d := nums(kv["duration_ms"])
		_, hi := minMax(d)
		w("**%s** (%s workers; done = no old worker alive, full count, every new worker answered): duration median %s ms, max %s ms.\n\n", k.title, rep.metaStr("workers"), f0(median(d)), f0(hi))
		w("| rep | duration ms | old workers gone ms | failed / total | failed after HUP | failure kinds | retryable* |\n|---|---|---|---|---|---|---|\n")
		for i := range kv["total"] {
			w("| %d | %s | %s | %s / %s | %s | %s | %s |\n", i+1, at(kv["duration_ms"], i), at(kv["old_gone_ms"], i), at(kv["failed"], i), at(kv["total"], i),
				at(kv["failed_after_hup"], i), orDash(at(kv["kinds"], i)), at(kv["retryable"], i))
		}
		w("\n")
	}
	if lv["kill_close"] != nil || lv["kill_ka"] != nil || lv["rolling_close"] != nil {
		w("\\* retryable: a keep-alive connection the server closed before any byte of the response; HTTP clients may resend such a request (RFC 9112 §9.3.1) and net/http's Transport does. Not counted as failed. When a worker is SIGKILLed these are the requests in flight on its keep-alive connections; in a rolling restart, requests sent on a connection at the moment the retiring worker closed it as idle.\n\n")
	}
	if sv := lv["supervisor"]; sv != nil {
		w("**Supervisor cost** (CPU from `/proc/<pid>/task/*/schedstat`, %% of one core; RSS = max VmRSS sampled every 100 ms):\n\n")
		w("| state | supervisor CPU %% | supervisor CPU ms | supervisor RSS | worker RSS (avg) |\n|---|---|---|---|---|\n")
		for _, st := range []struct{ key, name string }{{"idle", "idle"}, {"ka", "under wrk keep-alive load"}, {"close", "under wrk Connection: close load"}} {
			if len(sv[st.key+"_cpu_pct"]) == 0 {
				continue
			}
			w("| %s (%s s) | %s | %s | %s | %s |\n", st.name, at(sv[st.key+"_seconds"], 0), at(sv[st.key+"_cpu_pct"], 0), at(sv[st.key+"_cpu_ms"], 0),
				mib(at(sv[st.key+"_rss_kb"], 0)), mib(at(sv[st.key+"_worker_rss_kb"], 0)))
		}
		w("\n")
	}
	var errs []string
	for kind, kv := range lv {
		if kind == "scrape" {
			continue // in the metrics section
		}
		for _, e := range kv["error"] {
			errs = append(errs, kind+": "+e)
		}
	}
	sort.Strings(errs)
	for _, e := range errs {
		w("- lifecycle error: %s\n", e)
	}
	if len(errs) > 0 {
		w("\n")
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "–"
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func mib(kb string) string {
	v, err := strconv.ParseFloat(kb, 64)
	if err != nil {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", v/1024)
}
