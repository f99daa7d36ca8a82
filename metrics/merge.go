package metrics

import (
	"fmt"
	"math"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// A set is one snapshot of metric families: a worker's last gather, or the
// totals that workers which left the pool keep contributing.
type set map[string]*family

// family is one metric family, its series by label key.
type family struct {
	name   string
	typ    dto.MetricType
	help   string
	series map[string]*dto.Metric
}

// cumulative reports whether values of type t only grow while one process
// counts them (and so are kept after it is gone).
func cumulative(t dto.MetricType) bool {
	return t == dto.MetricType_COUNTER || t == dto.MetricType_HISTOGRAM || t == dto.MetricType_SUMMARY
}

// newSet checks a worker's families and indexes them. A payload that breaks
// the data model (a series without its type's value, a label named twice,
// the same series twice, a family twice) is an error: the worker's, whose
// snapshot is then refused.
func newSet(mfs []*dto.MetricFamily) (set, error) {
	s := make(set, len(mfs))
	for _, mf := range mfs {
		name := mf.GetName()
		if _, dup := s[name]; dup {
			return nil, fmt.Errorf("metric family %q appears twice", name)
		}
		if mf.Type == nil {
			return nil, fmt.Errorf("metric family %q has no type", name)
		}
		f := &family{name: name, typ: mf.GetType(), help: mf.GetHelp(), series: make(map[string]*dto.Metric, len(mf.Metric))}
		for _, m := range mf.Metric {
			if m == nil || !hasValue(m, f.typ) {
				return nil, fmt.Errorf("metric family %q (%s): a series without a %s value", name, f.typ, f.typ)
			}
			key, err := labelKey(m.Label)
			if err != nil {
				return nil, fmt.Errorf("metric family %q: %w", name, err)
			}
			if _, dup := f.series[key]; dup {
				return nil, fmt.Errorf("metric family %q: series {%s} appears twice", name, key)
			}
			f.series[key] = m
		}
		s[name] = f
	}
	return s, nil
}

func hasValue(m *dto.Metric, t dto.MetricType) bool {
	switch t {
	case dto.MetricType_COUNTER:
		return m.Counter != nil
	case dto.MetricType_GAUGE:
		return m.Gauge != nil
	case dto.MetricType_UNTYPED:
		return m.Untyped != nil
	case dto.MetricType_SUMMARY:
		return m.Summary != nil
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return m.Histogram != nil
	}
	return false
}

// labelKey is the identity of a series in its family: its labels, sorted
// by name.
func labelKey(ls []*dto.LabelPair) (string, error) {
	sorted := slices.Clone(ls)
	if slices.Contains(sorted, nil) {
		return "", fmt.Errorf("an empty label")
	}
	slices.SortFunc(sorted, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	pairs := make([]string, len(sorted))
	for i, l := range sorted {
		if i > 0 && l.GetName() == sorted[i-1].GetName() {
			return "", fmt.Errorf("label %q appears twice", l.GetName())
		}
		pairs[i] = fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())
	}
	return strings.Join(pairs, ","), nil
}

// count is what must never decrease in a cumulative series.
func count(m *dto.Metric, t dto.MetricType) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_SUMMARY:
		return float64(m.GetSummary().GetSampleCount())
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// resets returns the cumulative series of old that next no longer carries
// at the same or a higher count: a series the worker dropped, or reset (or
// changed to another type). Their last values must be kept, as if the
// worker that counted them had left. A series missing from a family of
// cut (see cutSeries) may only have been cut: it is no reset.
func resets(old, next set, cut map[string]bool) set {
	var out set
	for name, f := range old {
		if !cumulative(f.typ) {
			continue
		}
		nf := next[name]
		for key, m := range f.series {
			if nf != nil && nf.typ == f.typ {
				nm, ok := nf.series[key]
				if ok && count(nm, f.typ) >= count(m, f.typ) || !ok && cut[name] {
					continue
				}
			} else if nf == nil && cut[name] {
				continue
			}
			if out == nil {
				out = set{}
			}
			out.add(f, key, m, nil)
		}
	}
	return out
}

// carry adds into next the cumulative series of old that shown reports
// shown and that next lacks in a family of cut, with their values in old:
// series a cut left out, which must not disappear. It returns how many it
// added.
func carry(old, next set, cut map[string]bool, shown func(name, key string) bool) int {
	n := 0
	for name := range cut {
		f := old[name]
		if f == nil || !cumulative(f.typ) {
			continue
		}
		nf := next[name]
		if nf == nil {
			nf = &family{name: name, typ: f.typ, help: f.help, series: map[string]*dto.Metric{}}
			next[name] = nf
		}
		if nf.typ != f.typ {
			continue
		}
		for key, m := range f.series {
			if _, ok := nf.series[key]; !ok && shown(name, key) {
				nf.series[key] = m
				n++
			}
		}
	}
	return n
}

// keep adds the cumulative series of from into s: the totals of a worker
// that left, or series it reset.
func (s set) keep(from set) {
	for _, f := range from {
		if !cumulative(f.typ) {
			continue
		}
		for key, m := range f.series {
			s.add(f, key, m, nil)
		}
	}
}

// add adds series m (key, of family f) into s, with extra labels appended;
// it reports false, adding nothing, if s has the family with another type.
func (s set) add(f *family, key string, m *dto.Metric, extra []*dto.LabelPair) bool {
	dst, ok := s[f.name]
	if !ok {
		dst = &family{name: f.name, typ: f.typ, help: f.help, series: map[string]*dto.Metric{}}
		s[f.name] = dst
	}
	if dst.typ != f.typ {
		return false
	}
	key = seriesKey(key, extra)
	acc, ok := dst.series[key]
	if !ok {
		acc = zeroLike(m, f.typ, extra)
		dst.series[key] = acc
	}
	addInto(acc, m, f.typ)
	return true
}

// seriesKey is the key of a series of key with extra labels appended.
func seriesKey(key string, extra []*dto.LabelPair) string {
	if len(extra) == 0 {
		return key
	}
	return key + "," + extraKey(extra)
}

func extraKey(extra []*dto.LabelPair) string {
	var b strings.Builder
	for _, l := range extra {
		fmt.Fprintf(&b, "+%s=%q", l.GetName(), l.GetValue())
	}
	return b.String()
}

// zeroLike is a series with m's labels (and extra) and a zero value.
func zeroLike(m *dto.Metric, t dto.MetricType, extra []*dto.LabelPair) *dto.Metric {
	z := &dto.Metric{}
	for _, l := range m.Label {
		z.Label = append(z.Label, &dto.LabelPair{Name: proto.String(l.GetName()), Value: proto.String(l.GetValue())})
	}
	for _, l := range extra {
		z.Label = append(z.Label, &dto.LabelPair{Name: proto.String(l.GetName()), Value: proto.String(l.GetValue())})
	}
	slices.SortFunc(z.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	switch t {
	case dto.MetricType_COUNTER:
		z.Counter = &dto.Counter{Value: proto.Float64(0)}
	case dto.MetricType_GAUGE:
		z.Gauge = &dto.Gauge{Value: proto.Float64(0)}
	case dto.MetricType_UNTYPED:
		z.Untyped = &dto.Untyped{Value: proto.Float64(0)}
	case dto.MetricType_SUMMARY:
		z.Summary = &dto.Summary{SampleCount: proto.Uint64(0), SampleSum: proto.Float64(0)}
	default:
		z.Histogram = &dto.Histogram{SampleCount: proto.Uint64(0), SampleSum: proto.Float64(0)}
	}
	return z
}

// addInto adds m's value to acc's. Summaries add their counts and sums
// (quantiles of different processes cannot be combined, and are dropped);
// histograms add their counts, sums and classic buckets (see addBuckets).
func addInto(acc, m *dto.Metric, t dto.MetricType) {
	switch t {
	case dto.MetricType_COUNTER:
		*acc.Counter.Value += m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		*acc.Gauge.Value += m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		*acc.Untyped.Value += m.GetUntyped().GetValue()
	case dto.MetricType_SUMMARY:
		*acc.Summary.SampleCount += m.GetSummary().GetSampleCount()
		*acc.Summary.SampleSum += m.GetSummary().GetSampleSum()
	default:
		h := m.GetHistogram()
		*acc.Histogram.SampleCount += h.GetSampleCount()
		*acc.Histogram.SampleSum += h.GetSampleSum()
		acc.Histogram.Bucket = addBuckets(acc.Histogram.Bucket, h.GetBucket())
	}
}

// addBuckets adds two cumulative bucket lists. Where their bounds differ
// (two builds of a program), the result has the union of the bounds, and
// each side counts, at a bound it lacks, what it counted at its largest
// bound below: a lower bound, exact wherever the layouts agree, and never
// decreasing along the buckets or over time.
func addBuckets(a, b []*dto.Bucket) []*dto.Bucket {
	var bounds []float64
	for _, bk := range a {
		bounds = append(bounds, bk.GetUpperBound())
	}
	for _, bk := range b {
		bounds = append(bounds, bk.GetUpperBound())
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	out := make([]*dto.Bucket, 0, len(bounds))
	for _, ub := range bounds {
		n := cumAt(a, ub) + cumAt(b, ub)
		out = append(out, &dto.Bucket{UpperBound: proto.Float64(ub), CumulativeCount: proto.Uint64(n)})
	}
	return out
}

// cumAt is the cumulative count of bs at its largest bound ≤ ub.
func cumAt(bs []*dto.Bucket, ub float64) uint64 {
	var n uint64
	for _, bk := range bs {
		if bk.GetUpperBound() > ub || math.IsNaN(bk.GetUpperBound()) {
			break
		}
		n = bk.GetCumulativeCount()
	}
	return n
}

// families returns s as metric families, sorted by name and series.
func (s set) families() []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, 0, len(s))
	for _, f := range s {
		mf := &dto.MetricFamily{Name: proto.String(f.name), Type: f.typ.Enum()}
		if f.help != "" {
			mf.Help = proto.String(f.help)
		}
		keys := make([]string, 0, len(f.series))
		for k := range f.series {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			mf.Metric = append(mf.Metric, f.series[k])
		}
		out = append(out, mf)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// contribution is one live worker's part in a merge.
type contribution struct {
	slot, generation int
	snap             set
}

// slotLabel is the label a gauge of Exporter.PerSlot carries instead of
// being summed.
const slotLabel = "slot"

// merge returns the pool's metrics: the kept totals plus each live worker's
// last snapshot (in the order given: oldest first). A gauge named in
// perSlot is not summed: each slot's newest worker's value is shown with a
// "slot" label. It also returns the families it refused from some worker:
// a type that differs from the first contributor's, a per-slot gauge that
// already has a "slot" label, or a name that reserved reports taken.
func merge(kept set, live []contribution, perSlot map[string]bool, reserved func(string) bool) (set, []string) {
	return mergeBounded(kept, live, perSlot, reserved, nil)
}

// admission bounds a merge to limit series: first the kept totals' and
// those the last merge showed (shown, which each merge replaces), so that
// a series once shown keeps its place; then new ones while there is room.
type admission struct {
	limit   int
	shown   map[string]map[string]bool // family → series keys
	refused int                        // series refused at the last merge
}

// has reports whether the last merge showed series key of family name.
func (a *admission) has(name, key string) bool { return a.shown[name][key] }

// mergeBounded is merge, bounded by a if not nil (see admission).
func mergeBounded(kept set, live []contribution, perSlot map[string]bool, reserved func(string) bool, a *admission) (set, []string) {
	out := set{}
	out.keep(kept)
	m := &merger{out: out, perSlot: perSlot, reserved: reserved, newest: map[int]int{}}
	for i, c := range live {
		if j, ok := m.newest[c.slot]; !ok || c.generation >= live[j].generation {
			m.newest[c.slot] = i
		}
	}
	if a == nil {
		m.pass(live, func(string, string, bool) bool { return true })
	} else {
		// Shown holds kept's keys too (out.keep(kept) put them in out).
		m.pass(live, func(name, key string, _ bool) bool { return a.has(name, key) })
		n := out.len()
		a.refused = 0
		m.pass(live, func(name, key string, exists bool) bool {
			switch {
			case a.has(name, key):
				return false // added by the first pass
			case exists:
				return true
			case n < a.limit:
				n++
				return true
			}
			a.refused++
			return false
		})
		a.shown = out.keys()
	}
	slices.Sort(m.refused)
	return out, m.refused
}

// merger is one merge's state.
type merger struct {
	out      set
	perSlot  map[string]bool
	reserved func(string) bool
	newest   map[int]int // slot → index in live
	refused  []string
}

func (m *merger) refuse(name string) {
	if !slices.Contains(m.refused, name) {
		m.refused = append(m.refused, name)
	}
}

// pass adds the live series that admit takes (given their family, key and
// whether out has them already) into m.out.
func (m *merger) pass(live []contribution, admit func(name, key string, exists bool) bool) {
	for i, c := range live {
		for name, f := range c.snap {
			if m.reserved(name) {
				m.refuse(name)
				continue
			}
			slotted := m.perSlot[name] && f.typ == dto.MetricType_GAUGE
			if slotted && (m.newest[c.slot] != i || c.slot < 0) {
				continue // an older worker of the slot, or a standby
			}
			for key, s := range f.series {
				var extra []*dto.LabelPair
				if slotted {
					if hasLabel(s, slotLabel) {
						m.refuse(name)
						continue
					}
					extra = []*dto.LabelPair{{Name: proto.String(slotLabel), Value: proto.String(fmt.Sprint(c.slot))}}
				}
				full := seriesKey(key, extra)
				if !admit(name, full, m.out[name] != nil && m.out[name].series[full] != nil) {
					continue
				}
				if !m.out.add(f, key, s, extra) {
					m.refuse(name)
				}
			}
		}
	}
}

// len is the number of series in s.
func (s set) len() int {
	n := 0
	for _, f := range s {
		n += len(f.series)
	}
	return n
}

// keys returns the series keys of s, by family.
func (s set) keys() map[string]map[string]bool {
	out := make(map[string]map[string]bool, len(s))
	for name, f := range s {
		ks := make(map[string]bool, len(f.series))
		for k := range f.series {
			ks[k] = true
		}
		out[name] = ks
	}
	return out
}

func hasLabel(m *dto.Metric, name string) bool {
	for _, l := range m.Label {
		if l.GetName() == name {
			return true
		}
	}
	return false
}
