package metrics

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// TestSeriesCap: the largest families are cut first, to at most limit
// series in all.
func TestSeriesCap(t *testing.T) {
	for _, c := range []struct {
		sizes      []int
		limit, cap int
	}{
		{[]int{3, 100}, 10, 7},
		{[]int{3, 4}, 10, -1},
		{[]int{100, 100}, 10, 5},
		{[]int{1, 2, 1000, 50}, 100, 48},
		{nil, 10, -1},
	} {
		if got := seriesCap(c.sizes, c.limit); got != c.cap {
			t.Errorf("seriesCap(%v, %d) = %d, want %d", c.sizes, c.limit, got, c.cap)
		}
	}
}

// minted is a registry with a counter of n series labelled id=<prefix><i>,
// and a small family of 2 series.
func minted(prefix string, n int) (*prometheus.Registry, *prometheus.CounterVec) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "app_minted_total", Help: "Minted."}, []string{"id"})
	small := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "app_small_total", Help: "Small."}, []string{"k"})
	small.WithLabelValues("a").Inc()
	small.WithLabelValues("b").Inc()
	for i := range n {
		c.WithLabelValues(fmt.Sprintf("%s%05d", prefix, i)).Inc()
	}
	r := prometheus.NewRegistry()
	r.MustRegister(c, small)
	return r, c
}

// series counts the merged series of each family.
func series(t *testing.T, h *hub) map[string]int {
	t.Helper()
	mfs, err := h.workerFamilies()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, mf := range mfs {
		out[mf.GetName()] = len(mf.Metric)
	}
	return out
}

// poolValue is the value of the pool's own series name{labels}.
func poolValue(t *testing.T, h *hub, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.poolFamilies()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.Metric {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabelValue(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return -1
}

func hasLabelValue(m *dto.Metric, name, value string) bool {
	for _, l := range m.Label {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestWorkerCutsSnapshot: a worker's snapshot beyond MaxSeries is cut down,
// its largest family only, and the cut is told to the supervisor.
func TestWorkerCutsSnapshot(t *testing.T) {
	h := startHub(t, &Exporter{MaxSeries: 10})
	reg, _ := minted("w", 100)
	attachWorkerWith(t, h, 101, &Exporter{Gatherer: reg, MaxSeries: 10})
	want := map[string]int{"app_minted_total": 8, "app_small_total": 2}
	if diff := cmp.Diff(want, series(t, h)); diff != "" {
		t.Errorf("merged series (-want +got):\n%s", diff)
	}
	if got := poolValue(t, h, "clusterflock_metrics_series_refused"); got != 92 {
		t.Errorf("clusterflock_metrics_series_refused = %v, want 92", got)
	}
	if got := poolValue(t, h, "clusterflock_metrics_series"); got != 10 {
		t.Errorf("clusterflock_metrics_series = %v, want 10", got)
	}
}

// TestHubMaxSeries: workers minting label values of their own never take
// the merged metrics beyond MaxSeries, through a worker's exit and its
// replacement's new values; the series shown keep their place and their
// counts never go backwards; the totals kept for gone workers stay
// within MaxSeries.
func TestHubMaxSeries(t *testing.T) {
	const limit = 20
	h := startHub(t, &Exporter{MaxSeries: limit})
	// The workers cut nothing themselves (as a worker that does not would):
	// the supervisor bounds what it decodes and merges.
	ra, ca := minted("a", 15)
	rb, _ := minted("b", 15)
	a := attachWorkerWith(t, h, 101, &Exporter{Gatherer: ra, MaxSeries: 1000})
	attachWorkerWith(t, h, 102, &Exporter{Gatherer: rb, MaxSeries: 1000})
	before := merged(t, h)
	if n := len(before); n != limit {
		t.Fatalf("%d series merged, want MaxSeries (%d)", n, limit)
	}
	if got := poolValue(t, h, "clusterflock_metrics_series_refused"); got != 12 {
		t.Errorf("clusterflock_metrics_series_refused = %v, want 12 (b's 15 ids beyond the 20th series, less 3 that fit)", got)
	}
	ca.WithLabelValues("a00000").Add(5) // counted after the last scrape: the final snapshot has it
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, h, 1)
	rc, _ := minted("c", 30)
	attachWorkerWith(t, h, 103, &Exporter{Gatherer: rc, MaxSeries: 1000})
	after := merged(t, h)
	if n := len(after); n != limit {
		t.Errorf("%d series merged after a worker left and another came, want %d", n, limit)
	}
	for k, v := range before {
		if got, ok := after[k]; !ok || got < v {
			t.Errorf("series %s: %v before, %v (shown %v) after", k, v, got, ok)
		}
	}
	if got := after[`app_minted_total{id="a00000"}`]; got != 6 {
		t.Errorf("a's first series = %v after it left, want its final 6", got)
	}
	h.mu.Lock()
	kept := h.kept.len()
	h.mu.Unlock()
	if kept > limit {
		t.Errorf("%d series kept for gone workers, want ≤ MaxSeries (%d)", kept, limit)
	}
}

// merged is the merged workers' counters by series.
func merged(t *testing.T, h *hub) map[string]float64 {
	t.Helper()
	mfs, err := h.workerFamilies()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	return out
}

// TestHostWideDropped: the process collector's network counters, which
// read the whole network namespace, are not summed over workers; the
// supervisor shows its own once.
func TestHostWideDropped(t *testing.T) {
	h := startHub(t, &Exporter{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	attachWorker(t, h, 101, reg)
	got := series(t, h)
	if got["process_cpu_seconds_total"] != 1 {
		t.Fatalf("the worker's process collector is not merged: %v", got)
	}
	for name := range got {
		if hostWide(name) {
			t.Errorf("%s is summed over workers", name)
		}
	}
	// A worker of another build that still sends them.
	body, _ := encodeFamilies([]*dto.MetricFamily{{Name: new("process_network_receive_bytes_total"), Type: dto.MetricType_COUNTER.Enum(),
		Metric: []*dto.Metric{{Counter: &dto.Counter{Value: new(1e9)}}}}})
	s, _, err := decodeSnapshot(body, DefaultMaxSeries)
	if err != nil || len(s) != 0 {
		t.Errorf("decodeSnapshot kept %v (err %v), want nothing", s, err)
	}
	if v := poolValue(t, h, "clusterflock_supervisor_process_network_receive_bytes_total"); v < 0 {
		t.Error("the supervisor does not show its own clusterflock_supervisor_process_network_receive_bytes_total")
	}
}

// TestHubInterruptedFrame: a channel that ends inside a frame (a worker
// killed while sending) is counted as interrupted, not malformed; the last
// snapshot stays. One reset between frames is a plain end.
func TestHubInterruptedFrame(t *testing.T) {
	h := startHub(t, &Exporter{ScrapeTimeout: 50 * time.Millisecond})
	sup, wk := pair(t)
	h.Attach(101, sup)
	snap := snapshotFrame(4)
	wk.Write(snap)
	if got := appTotal(t, h); got != 4 {
		t.Fatalf("app_total = %v, want 4", got)
	}
	wk.Write(snap[:7])
	wk.Close()
	waitMembers(t, h, 0)
	if got := appTotal(t, h); got != 4 {
		t.Errorf("app_total after the cut = %v, want 4", got)
	}
	// A worker that exits with a gather byte unread resets its channel,
	// between frames: its end, not an interruption.
	sup, wk = pair(t)
	h.Attach(102, sup)
	wk.Write(snap)
	if got := appTotal(t, h); got != 8 {
		t.Fatalf("app_total = %v, want 8", got)
	}
	h.request()
	wk.Close()
	waitMembers(t, h, 0)
	for reason, want := range map[string]float64{"interrupted": 1, "malformed": 0} {
		if got := poolValue(t, h, "clusterflock_metrics_worker_errors_total", "reason", reason); got != want {
			t.Errorf("worker errors {reason=%q} = %v, want %v", reason, got, want)
		}
	}
}

// TestWorkerFinalFrameBounded: a worker whose supervisor never reads its
// channel closes within finalWrite, its final frame given up.
func TestWorkerFinalFrameBounded(t *testing.T) {
	reg, _ := minted("x", 20000) // more than the socket buffers hold
	sup, wk := pair(t)
	defer sup.Close()
	wf, err := wk.(*net.UnixConn).File()
	if err != nil {
		t.Fatal(err)
	}
	wk.Close()
	pw, err := (&Exporter{Gatherer: reg}).Worker(plug.WorkerConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, wf)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pw.Close()
	if d := time.Since(start); d > finalWrite+time.Second {
		t.Errorf("Close took %v with a supervisor that does not read, want ≤ finalWrite (%v)", d, finalWrite)
	}
}

// TestScrapeSlowReaders: connections that send GET /metrics and never
// read their response do not keep other scrapes from a 200.
func TestScrapeSlowReaders(t *testing.T) {
	h := startHub(t, &Exporter{})
	// A response of about 6 MB: more than the socket buffers hold.
	reg, _ := minted(strings.Repeat("s", 2000), 3000)
	attachWorker(t, h, 101, reg)
	for deadline := time.Now().Add(10 * time.Second); series(t, h)["app_minted_total"] < 3000; {
		if time.Now().After(deadline) {
			t.Fatal("the worker's snapshot did not arrive")
		}
	}
	addr := h.ln.Addr().String()
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		// It reads the status line: its request is being answered.
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	for i := range 5 {
		start := time.Now()
		resp, err := client.Get("http://" + addr + "/metrics")
		t.Logf("scrape %d: %v", i, time.Since(start))
		if err != nil {
			t.Fatalf("scrape %d beside 8 slow readers: %v", i, err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n < 6e6 {
			t.Fatalf("scrape %d beside 8 slow readers: status %d, %d bytes", i, resp.StatusCode, n)
		}
	}
}

// TestHandOverCarriesKept: a binary upgrade's new supervisor serves the
// totals the old one kept for its gone workers (one sum a series), within
// its MaxSeries, on the old one's listener.
func TestHandOverCarriesKept(t *testing.T) {
	const limit = 10
	old := startHub(t, &Exporter{MaxSeries: limit})
	rb, _ := counterReg(3)
	b := attachWorker(t, old, 101, rb)
	ra, _ := minted("a", 30)
	a := attachWorkerWith(t, old, 102, &Exporter{Gatherer: ra, MaxSeries: 1000})
	want := merged(t, old) // app_total and the series MaxSeries left room for
	if want["app_total{}"] != 3 || len(want) != limit {
		t.Fatalf("the old supervisor's merged counters: %v", want)
	}
	a.Close()
	b.Close()
	waitMembers(t, old, 0)
	oldEnd, newEnd := pairFiles(t)
	heir, err := (&Exporter{Addr: "127.0.0.1:0", MaxSeries: limit}).Supervisor(plug.SupervisorConfig{
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Handover: newEnd,
		Pool:     old.pool.snapshot,
		Queues:   old.pool.queues,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := heir.(*hub)
	t.Cleanup(func() { h.Close() })
	if err := old.HandOver(oldEnd); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := merged(t, h)
		diff := cmp.Diff(want, got)
		if diff == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the heir's merged counters (-old's +heir's):\n%s", diff)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
	h.mu.Lock()
	kept := h.kept.len()
	h.mu.Unlock()
	if kept > limit {
		t.Errorf("the heir keeps %d series, want ≤ MaxSeries (%d)", kept, limit)
	}
}

// pairFiles is a connected unix socket pair, as files.
func pairFiles(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "old"), os.NewFile(uintptr(fds[1]), "new")
}

// TestNegativeMaxSeries: a negative MaxSeries is an error naming it, at
// start.
func TestNegativeMaxSeries(t *testing.T) {
	_, err := (&Exporter{Addr: "127.0.0.1:0", MaxSeries: -1}).Supervisor(plug.SupervisorConfig{Logger: slog.Default()})
	if err == nil || !strings.Contains(err.Error(), "MaxSeries") {
		t.Errorf("MaxSeries -1: error %v, want one naming MaxSeries", err)
	}
}

// TestDecodeCuts: a snapshot beyond the limit is cut as it is decoded,
// its largest family keeping its first series.
func TestDecodeCuts(t *testing.T) {
	reg, _ := minted("d", 1000)
	mfs, _ := reg.Gather()
	body, _ := encodeFamilies(mfs)
	s, cut, err := decodeSnapshot(body, 10)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range s["app_minted_total"].series {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{`id="d00000"`, `id="d00001"`, `id="d00002"`, `id="d00003"`, `id="d00004"`, `id="d00005"`, `id="d00006"`, `id="d00007"`}
	if diff := cmp.Diff(want, keys); diff != "" || cut.n != 992 || !cut.families["app_minted_total"] || len(cut.families) != 1 || len(s["app_small_total"].series) != 2 {
		t.Errorf("cut %v, app_small_total %d series, app_minted_total (-want +got):\n%s", cut, len(s["app_small_total"].series), diff)
	}
}

// TestCutSeriesComeBack: a counter series that MaxSeries cuts from its
// worker's snapshot (another family grew) keeps its last value shown, and
// when the cut eases (that family shrank) it comes back at its worker's
// count, not that count plus the value it had when cut; so after the
// worker leaves.
func TestCutSeriesComeBack(t *testing.T) {
	const limit = 10
	h := startHub(t, &Exporter{MaxSeries: limit})
	counts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "app_minted_total", Help: "Minted."}, []string{"id"})
	gauges := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "app_level", Help: "Level."}, []string{"id"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(counts, gauges)
	for i := range 6 {
		counts.WithLabelValues(fmt.Sprint(i)).Add(100)
	}
	level := func(n int) {
		gauges.Reset()
		for i := range n {
			gauges.WithLabelValues(fmt.Sprint(i)).Set(1)
		}
	}
	level(4) // 6 + 4 series: no cut
	w := attachWorkerWith(t, h, 101, &Exporter{Gatherer: reg, MaxSeries: limit})
	last := `app_minted_total{id="5"}`
	if got := merged(t, h)[last]; got != 100 {
		t.Fatalf("%s = %v before any cut, want 100", last, got)
	}
	level(8) // 6 + 8 series: each family keeps 5, id 5 is cut
	if got := merged(t, h)[last]; got != 100 {
		t.Errorf("%s = %v while cut, want its last value, 100", last, got)
	}
	if got := poolValue(t, h, "clusterflock_metrics_series_refused"); got != 4 {
		t.Errorf("clusterflock_metrics_series_refused = %v while cut, want 4", got)
	}
	counts.WithLabelValues("5").Add(5)
	level(4) // no cut again
	if got := merged(t, h)[last]; got != 105 {
		t.Errorf("%s = %v after the cut eased, want its worker's count, 105", last, got)
	}
	level(8) // cut again, then the worker leaves with id 5 cut from its final snapshot
	merged(t, h)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, h, 0)
	got := merged(t, h)
	for i := range 6 {
		k, want := fmt.Sprintf(`app_minted_total{id="%d"}`, i), 100.0
		if i == 5 {
			want = 105
		}
		if got[k] != want {
			t.Errorf("%s = %v after the worker left, want %v", k, got[k], want)
		}
	}
}

// TestCutUnshownNotKept: a series cut from a worker's snapshot before
// any scrape showed it is not kept as if its worker had dropped it: when
// it comes back, it is shown at its worker's count alone.
func TestCutUnshownNotKept(t *testing.T) {
	h := startHub(t, &Exporter{MaxSeries: 10})
	reg, c := minted("u", 3)
	snap := func() set {
		t.Helper()
		mfs, _ := reg.Gather()
		body, _ := encodeFamilies(mfs)
		s, _, err := decodeSnapshot(body, DefaultMaxSeries)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	m := &member{pid: 101, changed: make(chan struct{})}
	h.update(m, snap(), cutSeries{}) // not merged: nothing shown yet
	cutOut := snap()
	delete(cutOut["app_minted_total"].series, `id="u00002"`)
	h.update(m, cutOut, cutSeries{n: 1, families: map[string]bool{"app_minted_total": true}})
	h.mu.Lock()
	kept := h.kept.len()
	h.mu.Unlock()
	if kept != 0 {
		t.Errorf("%d series kept after a cut, want 0", kept)
	}
	c.WithLabelValues("u00002").Add(4)
	h.update(m, snap(), cutSeries{})
	h.mu.Lock()
	h.members[m.pid] = m // merged alone: m has no channel to ask
	h.mu.Unlock()
	out, _ := h.merged()
	h.mu.Lock()
	delete(h.members, m.pid)
	h.mu.Unlock()
	if got := seriesValue(out, "app_minted_total", `id="u00002"`); got != 5 {
		t.Errorf("the series back from its cut = %v, want its worker's count, 5", got)
	}
}

// TestCutFrame: a cut frame names the families cut, whatever their names
// hold; one that does not, or whose count is not one, is refused.
func TestCutFrame(t *testing.T) {
	c := cutSeries{n: 7, families: map[string]bool{"a_total": true, "odd\nname \"x\"": true}}
	got, err := parseCut(c.encode())
	if err != nil || got.n != 7 || !cmp.Equal(got.families, c.families) {
		t.Errorf("parseCut(encode(%v)) = %v, %v", c, got, err)
	}
	for _, body := range []string{"", "-1", "x", "3", "3\nnot quoted"} {
		if _, err := parseCut([]byte(body)); err == nil {
			t.Errorf("parseCut(%q) = nil error, want one", body)
		}
	}
	if got, err := parseCut([]byte("0")); err != nil || got.n != 0 {
		t.Errorf("parseCut(\"0\") = %v, %v; want nothing cut", got, err)
	}
}

// TestKeptFillsMaxSeries: once the gone workers' kept totals fill
// MaxSeries, a new worker's new series are refused, counted at every
// scrape, while its series that are kept already keep counting; the kept
// series stay at their values.
func TestKeptFillsMaxSeries(t *testing.T) {
	const limit = 10
	h := startHub(t, &Exporter{MaxSeries: limit})
	ra, _ := minted("a", 8) // 8 + 2 series: the limit
	a := attachWorkerWith(t, h, 101, &Exporter{Gatherer: ra, MaxSeries: limit})
	before := merged(t, h)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, h, 0)
	rb, _ := minted("b", 5)
	attachWorkerWith(t, h, 102, &Exporter{Gatherer: rb, MaxSeries: limit})
	for scrape := range 2 {
		after := merged(t, h)
		want := maps.Clone(before)
		want[`app_small_total{k="a"}`], want[`app_small_total{k="b"}`] = 2, 2 // a's kept 1, b's 1
		if diff := cmp.Diff(want, after); diff != "" {
			t.Errorf("scrape %d: merged (-want +got):\n%s", scrape, diff)
		}
		if got := poolValue(t, h, "clusterflock_metrics_series_refused"); got != 5 {
			t.Errorf("scrape %d: clusterflock_metrics_series_refused = %v, want b's 5 new ids", scrape, got)
		}
	}
}
