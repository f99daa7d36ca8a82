package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The scrape step: the cost of GET /metrics on poolM (the pool with
// Options.Metrics), for each worker count in -scrape-workers, trivial
// handler, shared placement, no load:
//
//   - a count check: the sum of clusterflock_http_requests_total before and
//     after countProbes requests on fresh connections (each scrape gathers
//     every worker afresh, so the difference must be exactly countProbes);
//   - latency: -scrape-n sequential scrapes on one keep-alive connection,
//     as Prometheus asks (OpenMetrics preferred, gzip), timed from sending
//     the request to the last byte of the body;
//   - CPU: the supervisor's utime+stime (/proc/<pid>/stat; and the finer
//     schedstat) and the workers' over -scrape-dur while scraped once per
//     second, as % of one core. The supervisor also gathers every worker
//     each GatherInterval (1 s) without a scrape: that is included.
//
// Rows: kind "scrape", rep = worker count.

const countProbes = 50

// promAccept is roughly the Accept header of a Prometheus 3 scrape.
const promAccept = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4," +
	"text/plain;version=1.0.0;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"

func (c *config) scrapeAll(w *csvWriter) {
	for _, n := range c.scrapeWorkers {
		name := fmt.Sprintf("scrape cost, %d workers", n)
		fmt.Printf("lifecycle: %s\n", name)
		c.waitQuiet("lifecycle "+name, 0)
		srv, err := c.start(c.poolMSpec(n), "ok", false)
		if err != nil {
			c.notes = append(c.notes, fmt.Sprintf("lifecycle %s: start failed: %v", name, err))
			w.row("scrape", n, "error", "start failed")
			fmt.Printf("lifecycle %s: start failed: %v\n", name, err)
			continue
		}
		if err := c.scrapeCost(srv, n, w); err != nil {
			c.notes = append(c.notes, fmt.Sprintf("lifecycle %s: %v", name, err))
			w.row("scrape", n, "error", err.Error())
			fmt.Printf("lifecycle %s: %v\n", name, err)
		}
		srv.stop()
	}
}

// scraper scrapes one /metrics on a keep-alive connection.
type scraper struct {
	url    string
	client *http.Client
}

func newScraper(addr string) *scraper {
	return &scraper{url: "http://" + addr + "/metrics", client: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: false},
	}}
}

type scrapeResult struct {
	took        time.Duration
	body        string
	contentType string
}

func (s *scraper) scrape() (scrapeResult, error) {
	req, err := http.NewRequest("GET", s.url, nil)
	if err != nil {
		return scrapeResult{}, err
	}
	req.Header.Set("Accept", promAccept)
	t0 := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return scrapeResult{}, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(t0)
	if err != nil {
		return scrapeResult{}, err
	}
	if resp.StatusCode != 200 {
		return scrapeResult{}, fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	return scrapeResult{took: took, body: string(body), contentType: resp.Header.Get("Content-Type")}, nil
}

// sampleValue sums the samples of metric name (any labels) in a text or
// OpenMetrics exposition, and reports whether there was one.
func sampleValue(body, name string) (float64, bool) {
	sum, found := 0.0, false
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		if rest[0] == '{' {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				continue
			}
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum, found = sum+v, true
	}
	return sum, found
}

// series counts the sample lines of an exposition.
func series(body string) int {
	n := 0
	for _, l := range strings.Split(body, "\n") {
		if l != "" && l[0] != '#' {
			n++
		}
	}
	return n
}

// quantile is the nearest-rank q-quantile of sorted v.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return -1
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (c *config) scrapeCost(r *running, workers int, w *csvWriter) error {
	if r.metricsAddr == "" {
		return fmt.Errorf("the server has no metrics address")
	}
	if _, err := c.settle(r); err != nil {
		return err
	}
	row := func(k string, v any) { w.row("scrape", workers, k, v) }
	row("workers", workers)
	s := newScraper(r.metricsAddr)

	// Count check.
	first, err := s.scrape()
	if err != nil {
		return fmt.Errorf("first scrape: %w", err)
	}
	before, _ := sampleValue(first.body, "clusterflock_http_requests_total")
	probeErrs := 0
	for range countProbes {
		if a, err := probe(r.addr, "/", time.Second); err != nil || a.status != 200 {
			probeErrs++
		}
	}
	second, err := s.scrape()
	if err != nil {
		return fmt.Errorf("count-check scrape: %w", err)
	}
	after, found := sampleValue(second.body, "clusterflock_http_requests_total")
	ready := -1.0
	for _, l := range strings.Split(second.body, "\n") {
		if strings.HasPrefix(l, `clusterflock_workers{state="ready"} `) {
			ready, _ = strconv.ParseFloat(strings.Fields(l)[1], 64)
		}
	}
	delta := after - before
	row("count_sent", countProbes-probeErrs)
	row("count_delta", fmt.Sprintf("%.0f", delta))
	row("ready_gauge", fmt.Sprintf("%.0f", ready))
	row("bytes", len(second.body))
	row("series", series(second.body))
	ct, _, _ := strings.Cut(second.contentType, ";")
	if _, v, ok := strings.Cut(second.contentType, "version="); ok {
		v, _, _ = strings.Cut(v, ";")
		ct += " " + v
	}
	row("content_type", ct)
	fmt.Printf("  scrape %2d workers: count check %.0f counted / %d sent (found=%v), ready gauge %.0f, %d bytes, %d samples, %s\n",
		workers, delta, countProbes-probeErrs, found, ready, len(second.body), series(second.body), second.contentType)

	// Latency: sequential scrapes, idle pool.
	var lat []time.Duration
	errs := 0
	var lastErr error
	for range c.scrapeN {
		res, err := s.scrape()
		if err != nil {
			errs++
			lastErr = err
			continue
		}
		lat = append(lat, res.took)
	}
	slices.Sort(lat)
	row("scrapes", c.scrapeN)
	row("lat_errors", errs)
	row("lat_median_ms", msf3(quantile(lat, 0.5)))
	row("lat_p99_ms", msf3(quantile(lat, 0.99)))
	row("lat_max_ms", msf3(quantile(lat, 1)))
	fmt.Printf("  scrape %2d workers: %d sequential scrapes: median %s ms, p99 %s ms, max %s ms, %d errors\n",
		workers, c.scrapeN, msf3(quantile(lat, 0.5)), msf3(quantile(lat, 0.99)), msf3(quantile(lat, 1)), errs)
	if lastErr != nil {
		fmt.Printf("    last error: %v\n", lastErr)
		row("lat_last_error", lastErr.Error())
	}

	// CPU while scraped once per second, no load.
	time.Sleep(time.Second)
	pids := liveChildren(r.pid)
	workerJ := func() uint64 {
		var t uint64
		for _, p := range pids {
			t += jiffies(p)
		}
		return t
	}
	j0, ns0, wj0, t0 := jiffies(r.pid), cpuNs(r.pid), workerJ(), time.Now()
	var paced []time.Duration
	pacedErrs := 0
	n := int(c.scrapeDur / time.Second)
	for i := range n {
		time.Sleep(time.Until(t0.Add(time.Duration(i) * time.Second)))
		res, err := s.scrape()
		if err != nil {
			pacedErrs++
			continue
		}
		paced = append(paced, res.took)
	}
	time.Sleep(time.Until(t0.Add(c.scrapeDur)))
	j1, ns1, wj1, el := jiffies(r.pid), cpuNs(r.pid), workerJ(), time.Since(t0)
	rss, _ := rssKB(r.pid)
	slices.Sort(paced)
	tick := 10 * time.Millisecond // USER_HZ is 100 on Linux
	supStat := 100 * float64(time.Duration(j1-j0)*tick) / float64(el)
	supSched := 100 * float64(ns1-ns0) / float64(el)
	wrkStat := 100 * float64(time.Duration(wj1-wj0)*tick) / float64(el)
	row("cpu_seconds", fmt.Sprintf("%.1f", el.Seconds()))
	row("cpu_scrapes", n)
	row("sup_cpu_pct_stat", fmt.Sprintf("%.3f", supStat))
	row("sup_cpu_ms_stat", fmt.Sprintf("%.0f", float64(time.Duration(j1-j0)*tick)/1e6))
	row("sup_cpu_pct_schedstat", fmt.Sprintf("%.3f", supSched))
	row("workers_cpu_pct_stat", fmt.Sprintf("%.3f", wrkStat))
	row("paced_median_ms", msf3(quantile(paced, 0.5)))
	row("paced_errors", pacedErrs)
	row("sup_rss_kb", rss)
	fmt.Printf("  scrape %2d workers: scraped every 1 s for %.1f s: supervisor CPU %.3f%% of one core (stat; schedstat %.3f%%), workers %.3f%% (sum), paced scrape median %s ms, %d errors, supervisor RSS %d KiB\n",
		workers, el.Seconds(), supStat, supSched, wrkStat, msf3(quantile(paced, 0.5)), pacedErrs, rss)
	if delta != float64(countProbes-probeErrs) {
		return fmt.Errorf("count check: clusterflock_http_requests_total went up by %.0f for %d requests", delta, countProbes-probeErrs)
	}
	return nil
}

func msf3(d time.Duration) string {
	if d < 0 {
		return "NA"
	}
	return fmt.Sprintf("%.3f", float64(d)/1e6)
}
