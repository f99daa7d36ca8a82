package metrics

import (
	"bytes"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// FuzzSnapshot: whatever bytes a worker sends on its metrics channel, the
// supervisor's frame reader and snapshot decoder return an error or a set
// that merges, keeps and is served (prometheus.Gatherers accepts it), and
// never panic.
func FuzzSnapshot(f *testing.F) {
	w := newFakeWorker(f, []float64{0.1, 1})
	w.hits.WithLabelValues("/").Add(3)
	w.latency.Observe(0.5)
	w.sizes.Observe(1)
	mfs, _ := w.reg.Gather()
	body, _ := encodeFamilies(mfs)
	f.Add(frame(frameSnapshot, body))
	f.Add(frame(frameError, []byte("boom")))
	f.Add(frame(frameSnapshot, body[:len(body)/2]))
	f.Add([]byte{0, 0, 0, 1, 's'})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			kind, body, err := readFrame(r)
			if err != nil {
				return
			}
			if kind != frameSnapshot {
				continue
			}
			s, _, err := decodeSnapshot(body, 3) // a small MaxSeries: snapshots are cut

			if err != nil {
				continue
			}
			kept := set{}
			kept.keep(resets(s, set{}, nil))
			a := &admission{limit: 4}
			mergeBounded(kept, []contribution{{slot: 0, snap: s}}, nil, reserved, a)
			out, _ := mergeBounded(kept, []contribution{{slot: 0, snap: s}, {slot: 1, snap: s}}, map[string]bool{"x": true}, reserved, a)
			if n := out.len(); n > 4 {
				t.Fatalf("%d series merged, above the limit 4", n)
			}
			g := prometheus.Gatherers{prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return out.families(), nil })}
			_, _ = g.Gather() // may report inconsistencies; must not panic
		}
	})
}
