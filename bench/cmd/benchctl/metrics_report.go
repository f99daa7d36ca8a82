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

func (rep *report) metricsThroughput(sb *strings.Builder) {
	w := func(format string, a ...any) { fmt.Fprintf(sb, format, a...) }
	ncpu, _ := strconv.ParseFloat(rep.metaStr("ncpu"), 64)
	pool, poolM, pool1 := rep.byRound("pool"), rep.byRound("poolM"), rep.byRound("pool1")
	hasAA := len(pool1) > 0
	w("Throughput: `poolM` and `pool` ran in the same interleaved rounds (fresh server each turn, same handler, same wrk). ")
	w("**poolM / pool** is the per-round ratio of requests/s, median [min..max]")
	if hasAA {
		w("; **A/A** is `pool1 / pool` in the same rounds: on a machine where the library's default GOMAXPROCS per worker is already 1, the two are the same configuration, so its spread is the noise floor of a ratio here")
	}
	w("; *quiet rounds only* keeps the rounds in which other processes used at most %d %% of the CPUs during both runs", busyPct)
	w(". **Overhead (wall)** is 1/rps(poolM) − 1/rps(pool) per round, in µs: how much longer each request takes at saturation, with the server and wrk sharing the machine (negative = poolM was faster in that round). **CPU/req** is the server tree's CPU time (user+sys, all processes) per request, median over rounds.\n\n")
	for _, h := range rep.handlers {
		if !rep.hasServer(h, "poolM") || !rep.hasServer(h, "pool") {
			continue
		}
		w("**%s handler**\n\n", h)
		w("| placement | mode | rounds | poolM / pool rps | same, quiet rounds only (n) |")
		if hasAA {
			w(" A/A: pool1 / pool rps |")
		}
		w(" poolM / pool p99 | pool rps (median) | poolM rps (median) | overhead (wall) µs/req | CPU/req µs pool → poolM | errs pool / poolM (total) |\n|---|---|---|---|---|")
		if hasAA {
			w("---|")
		}
		w("---|---|---|---|---|---|\n")
		for _, p := range rep.placements {
			for _, m := range rep.modes {
				var ratio, quiet, aa, p99r, over, cpuP, cpuM []float64
				n := 0
				for k, rm := range poolM {
					if k.handler != h || k.placement != p || k.mode != m {
						continue
					}
					rp, ok := pool[k]
					if !ok {
						continue
					}
					n++
					ratio = append(ratio, rm.rps/rp.rps)
					if rm.foreign <= busyPct && rp.foreign <= busyPct {
						quiet = append(quiet, rm.rps/rp.rps)
					}
					over = append(over, 1e6/rm.rps-1e6/rp.rps)
					if rp.p99 > 0 {
						p99r = append(p99r, rm.p99/rp.p99)
					}
					if ncpu > 0 && rp.srvCPU > 0 && rm.srvCPU > 0 {
						cpuP = append(cpuP, rp.srvCPU/100*ncpu*1e6/rp.rps)
						cpuM = append(cpuM, rm.srvCPU/100*ncpu*1e6/rm.rps)
					}
					if r1, ok := pool1[k]; ok {
						aa = append(aa, r1.rps/rp.rps)
					}
				}
				if n == 0 {
					continue
				}
				cp, cm := rep.cells[cellKey{h, p, m, "pool"}], rep.cells[cellKey{h, p, m, "poolM"}]
				w("| %s | %s | %d | **%s** | %s (%d) |", p, modeName[m], n, ratioStr(ratio), ratioStr(quiet), len(quiet))
				if hasAA {
					w(" %s |", ratioStr(aa))
				}
				w(" %s | %s | %s | **%s** | %s → %s | %d / %d |\n", ratioStr(p99r), f0(median(cp.rps)), f0(median(cm.rps)),
					rangeStr(over, f1), f1(median(cpuP)), f1(median(cpuM)), cp.errTotal, cm.errTotal)
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
