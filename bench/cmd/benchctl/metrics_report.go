package main

import (
	"fmt"
	"strconv"
	"strings"
)

// metricsMarkdown writes the "Metrics cost" section: poolM against pool in
// the same rounds, and the scrape step.
func (rep *report) metricsMarkdown(sb *strings.Builder) {
	w := func(format string, a ...any) { fmt.Fprintf(sb, format, a...) }
	scrape := rep.scrapeRows()
	hasM := false
	for k := range rep.cells {
		if k.srv == "poolM" {
			hasM = true
		}
	}
	if !hasM && scrape == nil {
		return
	}
	w("## Metrics cost (`poolM` = `pool` + `Options.Metrics`)\n\n")
	if hasM {
		rep.metricsThroughput(sb)
	}
	if scrape != nil {
		rep.metricsScrape(sb, scrape)
	}
}

// pairKey is one round of one (handler, placement, mode).
type pairKey struct {
	round                    int
	handler, placement, mode string
}

func (rep *report) byRound(srv string) map[pairKey]run {
	out := map[pairKey]run{}
	for _, r := range rep.runs {
		if r.srv == srv && r.ok && r.rps > 0 {
			out[pairKey{r.round, r.handler, r.placement, r.mode}] = r
		}
	}
	return out
}

func rangeStr(v []float64, f func(float64) string) string {
	if len(v) == 0 {
		return "–"
	}
	lo, hi := minMax(v)
	return fmt.Sprintf("%s [%s..%s]", f(median(v)), f(lo), f(hi))
}

func (rep *report) metricsThroughput(sb *strings.Builder) { rep.variantThroughput(sb, "poolM") }

// stuckMarkdown writes the "Stuck-guard cost" section: poolS against pool
// in the same rounds.
func (rep *report) stuckMarkdown(sb *strings.Builder) {
	hasS := false
	for k := range rep.cells {
		if k.srv == "poolS" {
			hasS = true
		}
	}
	if !hasS {
		return
	}
	fmt.Fprintf(sb, "## Stuck-guard cost (`poolS` = `pool` + `Options.StuckTimeout` = 30 s)\n\n")
	fmt.Fprintf(sb, "With StuckTimeout, every request's goroutine carries pprof labels (method, path, start time) while its handler runs and its ResponseWriter counts writes and flushes as progress; no request here comes near the timeout, so this is that per-request cost alone.\n\n")
	rep.variantThroughput(sb, "poolS")
}

// variantThroughput writes the throughput comparison of srv (a pool with
// one option set) against pool in the same rounds, with the A/A pool1 /
// pool beside it.
func (rep *report) variantThroughput(sb *strings.Builder, srv string) {
	w := func(format string, a ...any) { fmt.Fprintf(sb, format, a...) }
	ncpu, _ := strconv.ParseFloat(rep.metaStr("ncpu"), 64)
	pool, variant, pool1 := rep.byRound("pool"), rep.byRound(srv), rep.byRound("pool1")
	hasAA := len(pool1) > 0
	w("Throughput: `%s` and `pool` ran in the same interleaved rounds (fresh server each turn, same handler, same wrk). ", srv)
	w("**%s / pool** is the per-round ratio of requests/s, median [min..max]", srv)
	if hasAA {
		w("; **A/A** is `pool1 / pool` in the same rounds: on a machine where the library's default GOMAXPROCS per worker is already 1, the two are the same configuration, so its spread is the noise floor of a ratio here")
	}
	w("; *quiet rounds only* keeps the rounds in which other processes used at most %d %% of the CPUs during both runs", busyPct)
	w(". **Overhead (wall)** is 1/rps(%s) − 1/rps(pool) per round, in µs: how much longer each request takes at saturation, with the server and wrk sharing the machine (negative = %s was faster in that round). **CPU/req** is the server tree's CPU time (user+sys, all processes) per request, median over rounds.\n\n", srv, srv)
	for _, h := range rep.handlers {
		if !rep.hasServer(h, srv) || !rep.hasServer(h, "pool") {
			continue
		}
		w("**%s handler**\n\n", h)
		w("| placement | mode | rounds | %s / pool rps | same, quiet rounds only (n) |", srv)
		if hasAA {
			w(" A/A: pool1 / pool rps |")
		}
		w(" %s / pool p99 | pool rps (median) | %s rps (median) | overhead (wall) µs/req | CPU/req µs pool → %s | errs pool / %s (total) |\n|---|---|---|---|---|", srv, srv, srv, srv)
		if hasAA {
			w("---|")
		}
		w("---|---|---|---|---|---|\n")
		for _, p := range rep.placements {
			for _, m := range rep.modes {
				var ratio, quiet, aa, p99r, over, cpuP, cpuV []float64
				n := 0
				for k, rv := range variant {
					if k.handler != h || k.placement != p || k.mode != m {
						continue
					}
					rp, ok := pool[k]
					if !ok {
						continue
					}
					n++
					ratio = append(ratio, rv.rps/rp.rps)
					if rv.foreign <= busyPct && rp.foreign <= busyPct {
						quiet = append(quiet, rv.rps/rp.rps)
					}
					over = append(over, 1e6/rv.rps-1e6/rp.rps)
					if rp.p99 > 0 {
						p99r = append(p99r, rv.p99/rp.p99)
					}
					if ncpu > 0 && rp.srvCPU > 0 && rv.srvCPU > 0 {
						cpuP = append(cpuP, rp.srvCPU/100*ncpu*1e6/rp.rps)
						cpuV = append(cpuV, rv.srvCPU/100*ncpu*1e6/rv.rps)
					}
					if r1, ok := pool1[k]; ok {
						aa = append(aa, r1.rps/rp.rps)
					}
				}
				if n == 0 {
					continue
				}
				cp, cv := rep.cells[cellKey{h, p, m, "pool"}], rep.cells[cellKey{h, p, m, srv}]
				w("| %s | %s | %d | **%s** | %s (%d) |", p, modeName[m], n, ratioStr(ratio), ratioStr(quiet), len(quiet))
				if hasAA {
					w(" %s |", ratioStr(aa))
				}
				w(" %s | %s | %s | **%s** | %s → %s | %d / %d |\n", ratioStr(p99r), f0(median(cp.rps)), f0(median(cv.rps)),
					rangeStr(over, f1), f1(median(cpuP)), f1(median(cpuV)), cp.errTotal, cv.errTotal)
			}
		}
		w("\n")
	}
}

// scrapeRows is the scrape step's lifecycle rows by rep (the worker
// count, in run order; 0 for a skip), then key.
type scrapeRows struct {
	reps []string
	vals map[string]map[string][]string
}

func (rep *report) scrapeRows() *scrapeRows {
	var out *scrapeRows
	for _, r := range rep.life {
		if len(r) < 4 || r[0] != "scrape" {
			continue
		}
		if out == nil {
			out = &scrapeRows{vals: map[string]map[string][]string{}}
		}
		if out.vals[r[1]] == nil {
			out.vals[r[1]] = map[string][]string{}
			out.reps = append(out.reps, r[1])
		}
		out.vals[r[1]][r[2]] = append(out.vals[r[1]][r[2]], r[3])
	}
	return out
}

func (rep *report) metricsScrape(sb *strings.Builder, rows *scrapeRows) {
	w := func(format string, a ...any) { fmt.Fprintf(sb, format, a...) }
	if sk := rows.vals["0"]["skipped"]; len(sk) > 0 {
		w("**Scrape cost:** skipped: %s.\n\n", sk[0])
		return
	}
	w("**Scrape cost** (`poolM`, trivial handler, shared placement, no load; `Options.Workers` as given; exporter defaults: GatherInterval 1 s, ScrapeTimeout 250 ms, the default registry in each worker). ")
	w("Latency: %s sequential `GET /metrics` from the harness on one keep-alive connection, asking as Prometheus does (OpenMetrics preferred, gzip), request sent → last body byte. ", rep.metaStr("scrape_n"))
	w("CPU: over %s s while scraped once per second, from `/proc/<pid>/stat` utime+stime (10 ms ticks; schedstat, finer, beside it), %% of one core; it includes the supervisor's own gather of every worker each GatherInterval. ", rep.metaStr("scrape_dur_s"))
	w("Count check: `clusterflock_http_requests_total` summed over codes, before and after %d requests on fresh connections; each scrape gathers every worker afresh, so it must go up by exactly that.\n\n", countProbes)
	w("| workers | scrape median ms | p99 ms | max ms | errors | exposition | supervisor CPU %% (stat) | (schedstat) | workers' CPU %% (sum) | scrape median ms, 1/s | supervisor RSS | count check | ready gauge |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	var errs []string
	for _, n := range rows.reps {
		sc := rows.vals[n]
		for _, e := range sc["error"] {
			errs = append(errs, n+" workers: "+e)
		}
		for _, e := range sc["lat_last_error"] {
			errs = append(errs, n+" workers, last scrape error: "+e)
		}
		if len(sc["workers"]) == 0 {
			continue
		}
		i := 0
		count := fmt.Sprintf("%s / %s", at(sc["count_delta"], i), at(sc["count_sent"], i))
		if at(sc["count_delta"], i) == at(sc["count_sent"], i) {
			count += " ok"
		} else {
			count += " **MISMATCH**"
		}
		w("| %s | %s | %s | %s | %s / %s | %s samples, %s B (%s) | **%s** | %s | %s | %s | %s | %s | %s |\n",
			n, at(sc["lat_median_ms"], i), at(sc["lat_p99_ms"], i), at(sc["lat_max_ms"], i), at(sc["lat_errors"], i), at(sc["scrapes"], i),
			at(sc["series"], i), at(sc["bytes"], i), at(sc["content_type"], i),
			at(sc["sup_cpu_pct_stat"], i), at(sc["sup_cpu_pct_schedstat"], i), at(sc["workers_cpu_pct_stat"], i),
			at(sc["paced_median_ms"], i), mib(at(sc["sup_rss_kb"], i)), count, at(sc["ready_gauge"], i))
	}
	if sv := rep.lifeVals()["supervisor"]; sv != nil && len(sv["idle_cpu_pct"]) > 0 {
		w("\nFor reference, `pool` (no metrics) idle in the same run: supervisor CPU %s %% of one core (schedstat), RSS %s (Lifecycle costs above).\n",
			at(sv["idle_cpu_pct"], 0), mib(at(sv["idle_rss_kb"], 0)))
	}
	w("\n")
	for _, e := range errs {
		w("- scrape step error: %s\n", e)
	}
	if len(errs) > 0 {
		w("\n")
	}
}
