package metrics

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// worker is a fake worker's registry: counters, a histogram, a summary and
// gauges, set to what a test says.
type fakeWorker struct {
	reg      *prometheus.Registry
	hits     *prometheus.CounterVec
	latency  prometheus.Histogram
	sizes    prometheus.Summary
	inFlight prometheus.Gauge
	started  prometheus.Gauge
}

func newFakeWorker(t testing.TB, buckets []float64) *fakeWorker {
	t.Helper()
	w := &fakeWorker{
		reg:      prometheus.NewRegistry(),
		hits:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hits_total", Help: "Hits."}, []string{"path"}),
		latency:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.", Buckets: buckets}),
		sizes:    prometheus.NewSummary(prometheus.SummaryOpts{Name: "size_bytes", Help: "Sizes.", Objectives: map[float64]float64{0.5: 0.05}}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "in_flight", Help: "In flight."}),
		started:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "started_seconds", Help: "Start time."}),
	}
	w.reg.MustRegister(w.hits, w.latency, w.sizes, w.inFlight, w.started)
	return w
}

// snap is the worker's snapshot as the supervisor receives it: encoded,
// framed and decoded.
func (w *fakeWorker) snap(t *testing.T) set {
	t.Helper()
	mfs, err := w.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	body, err := encodeFamilies(mfs)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := decodeSnapshot(body, DefaultMaxSeries)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// text is s in the Prometheus text format, families sorted.
func text(t *testing.T, s set) string {
	t.Helper()
	var b strings.Builder
	for _, mf := range s.families() {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func noneReserved(string) bool { return false }

func TestMergeAddsAcrossWorkers(t *testing.T) {
	a, b := newFakeWorker(t, []float64{0.1, 1}), newFakeWorker(t, []float64{0.1, 1})
	a.hits.WithLabelValues("/").Add(3)
	b.hits.WithLabelValues("/").Add(4)
	b.hits.WithLabelValues("/x").Add(1)
	a.latency.Observe(0.05)
	b.latency.Observe(0.5)
	b.latency.Observe(5)
	a.sizes.Observe(10)
	b.sizes.Observe(30)
	a.inFlight.Set(2)
	b.inFlight.Set(5)
	a.started.Set(100)
	b.started.Set(200)
	got, refused := merge(set{}, []contribution{{slot: 0, snap: a.snap(t)}, {slot: 1, snap: b.snap(t)}},
		map[string]bool{"started_seconds": true}, noneReserved)
	if refused != nil {
		t.Errorf("refused %v", refused)
	}
	want := `# HELP hits_total Hits.
# TYPE hits_total counter
hits_total{path="/"} 7
hits_total{path="/x"} 1
# HELP in_flight In flight.
# TYPE in_flight gauge
in_flight 7
# HELP latency_seconds Latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="1"} 2
latency_seconds_bucket{le="+Inf"} 3
latency_seconds_sum 5.55
latency_seconds_count 3
# HELP size_bytes Sizes.
# TYPE size_bytes summary
size_bytes_sum 40
size_bytes_count 2
# HELP started_seconds Start time.
# TYPE started_seconds gauge
started_seconds{slot="0"} 100
started_seconds{slot="1"} 200
`
	if diff := cmp.Diff(want, text(t, got)); diff != "" {
		t.Errorf("merged (-want +got):\n%s", diff)
	}
}

// TestMergeKeepsWhatLeft: a worker that leaves keeps its counters, not its
// gauges; a series a worker drops or resets keeps its last value.
func TestMergeKeepsWhatLeft(t *testing.T) {
	a, b := newFakeWorker(t, []float64{1}), newFakeWorker(t, []float64{1})
	a.hits.WithLabelValues("/").Add(10)
	a.hits.WithLabelValues("/gone").Add(2)
	a.inFlight.Set(3)
	a.latency.Observe(0.5)
	b.hits.WithLabelValues("/").Add(1)
	kept := set{}
	before := a.snap(t)

	// a resets "/" to 1 and drops "/gone": both keep their last values.
	a.hits.Reset()
	a.hits.WithLabelValues("/").Add(1)
	after := a.snap(t)
	kept.keep(resets(before, after, nil))

	// b leaves: its counters stay, its gauges go.
	kept.keep(b.snap(t))
	got, _ := merge(kept, []contribution{{slot: 0, snap: after}}, nil, noneReserved)
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"hits_total", `path="/"`, 10 + 1 + 1},
		{"hits_total", `path="/gone"`, 2},
		{"in_flight", ``, 3},
	} {
		if v := seriesValue(got, c.name, c.labels); v != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	if h := got["latency_seconds"].series[""].Histogram; h.GetSampleCount() != 1 {
		t.Errorf("latency_seconds count %d, want 1", h.GetSampleCount())
	}
}

// seriesValue is the counter or gauge value of s's series name{labels}
// (labels as labelKey writes them), or -1.
func seriesValue(s set, name, labels string) float64 {
	m, ok := s[name].series[labels]
	if s[name] == nil || !ok {
		return -1
	}
	return m.GetCounter().GetValue() + m.GetGauge().GetValue()
}

// TestMergeHistogramLayouts: two builds with different buckets merge over
// the union of the bounds, never overstating a bucket.
func TestMergeHistogramLayouts(t *testing.T) {
	a, b := newFakeWorker(t, []float64{1, 10}), newFakeWorker(t, []float64{5})
	a.latency.Observe(0.5) // ≤1
	a.latency.Observe(7)   // ≤10
	b.latency.Observe(2)   // ≤5
	got, _ := merge(set{}, []contribution{{snap: a.snap(t)}, {snap: b.snap(t)}}, nil, noneReserved)
	var bounds []string
	for _, bk := range got["latency_seconds"].series[""].Histogram.Bucket {
		bounds = append(bounds, fmt.Sprintf("%g:%d", bk.GetUpperBound(), bk.GetCumulativeCount()))
	}
	// At 1: a's 1, b's nothing yet. At 5: a's 1 (its bound 1), b's 1. At
	// 10: a's 2, b's 1 (its bound 5). +Inf: all 3.
	want := []string{"1:1", "5:2", "10:3"}
	if diff := cmp.Diff(want, bounds); diff != "" {
		t.Errorf("buckets (-want +got):\n%s", diff)
	}
}

// TestMergeClashes: a family with another type than the first worker's, a
// per-slot gauge that has its own "slot" label, and a reserved name are
// refused and named; the rest merges.
func TestMergeClashes(t *testing.T) {
	a := newFakeWorker(t, []float64{1})
	a.hits.WithLabelValues("/").Add(1)
	temp := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "temp", Help: "t"}, []string{"slot"})
	temp.WithLabelValues("x").Set(1)
	other := prometheus.NewRegistry()
	other.MustRegister(temp,
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "hits_total", Help: "now a gauge"}),
		prometheus.NewCounter(prometheus.CounterOpts{Name: "clusterflock_workers", Help: "mine"}),
	)
	mfs, err := other.Gather()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := encodeFamilies(mfs)
	bs, _, err := decodeSnapshot(body, DefaultMaxSeries)
	if err != nil {
		t.Fatal(err)
	}
	got, refused := merge(set{}, []contribution{{snap: a.snap(t)}, {slot: 1, snap: bs}}, map[string]bool{"temp": true}, reserved)
	if diff := cmp.Diff([]string{"clusterflock_workers", "hits_total", "temp"}, refused); diff != "" {
		t.Errorf("refused (-want +got):\n%s", diff)
	}
	if v := got["hits_total"].series[`path="/"`].GetCounter().GetValue(); v != 1 {
		t.Errorf("hits_total = %v, want the first worker's 1", v)
	}
}

// TestDecodeRefusesMalformed: payloads that break the data model are the
// worker's error.
func TestDecodeRefusesMalformed(t *testing.T) {
	name, counter := "x_total", dto.MetricType_COUNTER
	gauge := dto.MetricType_GAUGE
	lbl := func(n, v string) *dto.LabelPair { return &dto.LabelPair{Name: &n, Value: &v} }
	one := 1.0
	for what, mfs := range map[string][]*dto.MetricFamily{
		"no type":           {{Name: &name, Metric: []*dto.Metric{{Counter: &dto.Counter{Value: &one}}}}},
		"value of another":  {{Name: &name, Type: &counter, Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: &one}}}}},
		"a label twice":     {{Name: &name, Type: &counter, Metric: []*dto.Metric{{Label: []*dto.LabelPair{lbl("a", "1"), lbl("a", "2")}, Counter: &dto.Counter{Value: &one}}}}},
		"a series twice":    {{Name: &name, Type: &gauge, Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: &one}}, {Gauge: &dto.Gauge{Value: &one}}}}},
		"a family twice":    {{Name: &name, Type: &gauge, Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: &one}}}}, {Name: &name, Type: &gauge}},
		"an invalid name":   {{Name: strPtr(""), Type: &gauge}},
		"an invalid label":  {{Name: &name, Type: &counter, Metric: []*dto.Metric{{Label: []*dto.LabelPair{lbl("", "1")}, Counter: &dto.Counter{Value: &one}}}}},
		"a non-UTF-8 value": {{Name: &name, Type: &counter, Metric: []*dto.Metric{{Label: []*dto.LabelPair{lbl("a", "\xff")}, Counter: &dto.Counter{Value: &one}}}}},
	} {
		body, err := encodeFamilies(mfs)
		if err != nil {
			continue // the encoder refuses it already
		}
		if _, _, err := decodeSnapshot(body, DefaultMaxSeries); err == nil {
			t.Errorf("%s: decoded without error", what)
		}
	}
	// A length prefix claiming 4 GiB in a 5-byte body: refused without
	// allocating what it claims.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, _, err := decodeSnapshot([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, DefaultMaxSeries); err == nil {
		t.Error("garbage: decoded without error")
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("decoding a 5-byte body allocated %d bytes", n)
	}
}

func strPtr(s string) *string { return &s }
