package metrics

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"syscall"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The metrics channel between the supervisor and a worker is a unix stream
// socket. The supervisor writes one byte, gatherByte, to ask for a
// snapshot; the worker answers with a frame, and sends a last one when it
// has stopped serving. A frame is a 4-byte big-endian length, then that
// many bytes: a kind byte and its body. A snapshot's body is the worker's
// metric families in the Prometheus delimited protobuf format; an error's
// body is the text of what went wrong gathering, a cut's what the worker
// left out of its snapshot (Exporter.MaxSeries): the number of series, in
// decimal, then the name of each family it cut, a line each, quoted as Go
// does (strconv.Quote). A snapshot follows either.

const gatherByte = 'g'

// Frame kinds.
const (
	frameSnapshot = 's'
	frameError    = 'e'
	frameCut      = 'c'
)

// maxFrame bounds a frame: a worker that sends more is cut off (its last
// good snapshot stays), and the supervisor never allocates more.
const maxFrame = 32 << 20

var errTooLarge = errors.New("frame larger than 32 MiB")

// errInterrupted is a channel that ended inside a frame: its worker was
// killed, or gave up its last frame (finalWrite), while sending.
var errInterrupted = errors.New("the channel closed inside a frame")

// writeFrame writes one frame of kind k.
func writeFrame(w io.Writer, k byte, body []byte) error {
	if len(body)+1 > maxFrame {
		return errTooLarge
	}
	buf := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)+1))
	buf[4] = k
	_, err := w.Write(append(buf, body...))
	return err
}

// readFrame reads one frame. io.EOF means the channel closed between
// frames, errInterrupted inside one; any other error leaves it unusable.
func readFrame(r io.Reader) (byte, []byte, error) {
	var hdr [4]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		switch {
		case n == 0 && errors.Is(err, syscall.ECONNRESET):
			// A worker that exits with a gather byte unread resets the
			// channel; its frames before were all read.
			return 0, nil, io.EOF
		case cutShort(err):
			return 0, nil, fmt.Errorf("%w (in its header): %w", errInterrupted, err)
		}
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	switch {
	case n == 0:
		return 0, nil, errors.New("empty frame")
	case n > maxFrame:
		return 0, nil, fmt.Errorf("%w (%d bytes)", errTooLarge, n)
	}
	// Grown as the bytes arrive: a header alone does not make the
	// supervisor allocate what it claims.
	buf, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err == nil && len(buf) < int(n) {
		err = io.ErrUnexpectedEOF
	}
	if cutShort(err) {
		return 0, nil, fmt.Errorf("%w (%d of %d bytes): %w", errInterrupted, len(buf), n, err)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("truncated frame: %w", err)
	}
	if buf[0] != frameSnapshot && buf[0] != frameError && buf[0] != frameCut {
		return 0, nil, fmt.Errorf("unknown frame kind %q", buf[0])
	}
	return buf[0], buf[1:], nil
}

// delimited is the format of a snapshot's body.
var delimited = expfmt.NewFormat(expfmt.TypeProtoDelim)

// encodeFamilies encodes mfs as a snapshot body.
func encodeFamilies(mfs []*dto.MetricFamily) ([]byte, error) {
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, delimited)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// cutSeries is what MaxSeries left out of a snapshot: how many series, and
// from which families. A series of such a family that is missing from the
// snapshot may have been cut, not dropped by its worker.
type cutSeries struct {
	n        int
	families map[string]bool
}

// plus is c and o together.
func (c cutSeries) plus(o cutSeries) cutSeries {
	out := cutSeries{n: c.n + o.n}
	for _, fs := range []map[string]bool{c.families, o.families} {
		for name := range fs {
			out.cutFamily(name, 0)
		}
	}
	return out
}

// cutFamily records n series cut from family name.
func (c *cutSeries) cutFamily(name string, n int) {
	if c.families == nil {
		c.families = map[string]bool{}
	}
	c.families[name] = true
	c.n += n
}

// encode is c as a cut frame's body.
func (c cutSeries) encode() []byte {
	b := strconv.AppendInt(nil, int64(c.n), 10)
	names := slices.Sorted(maps.Keys(c.families))
	for _, name := range names {
		b = strconv.AppendQuote(append(b, '\n'), name)
	}
	return b
}

// parseCut parses a cut frame's body.
func parseCut(body []byte) (cutSeries, error) {
	lines := strings.Split(string(body), "\n")
	n, err := strconv.Atoi(lines[0])
	if err != nil || n < 0 {
		return cutSeries{}, fmt.Errorf("a count of cut series that is not one: %q", lines[0])
	}
	c := cutSeries{n: n}
	for _, l := range lines[1:] {
		name, err := strconv.Unquote(l)
		if err != nil {
			return cutSeries{}, fmt.Errorf("a cut family's name that is not quoted: %q", l)
		}
		c.cutFamily(name, 0)
	}
	if n > 0 && len(c.families) == 0 {
		return cutSeries{}, fmt.Errorf("%d series cut from no family", n)
	}
	return c, nil
}

// decodeSnapshot parses and checks a snapshot body (see newSet), without
// the host's families (hostWide), cut down to limit series (see
// seriesCap: the largest families keep their first series), reporting what
// it left out. The cut is made on the encoded families, before they
// are decoded: a worker's snapshot never makes the supervisor allocate
// more than limit series. Each family's length prefix is bounded by the
// body's own length: a prefix that claims more must not make the
// supervisor allocate it (expfmt's decoder would).
func decodeSnapshot(body []byte, limit int) (set, cutSeries, error) {
	var cut cutSeries
	msgs, sizes, err := splitFamilies(body)
	if err != nil {
		return nil, cut, fmt.Errorf("malformed snapshot: %w", err)
	}
	c := seriesCap(sizes, limit)
	mfs := make([]*dto.MetricFamily, 0, len(msgs))
	for i, msg := range msgs {
		cutHere := c >= 0 && sizes[i] > c
		if cutHere {
			msg = firstMetrics(msg, c)
		}
		mf := &dto.MetricFamily{}
		err := proto.Unmarshal(msg, mf)
		if err == nil {
			err = checkNames(mf)
		}
		if err != nil {
			return nil, cutSeries{}, fmt.Errorf("malformed snapshot: %w", err)
		}
		if cutHere {
			cut.cutFamily(mf.GetName(), sizes[i]-c)
		}
		if !hostWide(mf.GetName()) {
			mfs = append(mfs, mf)
		}
	}
	s, err := newSet(mfs)
	if err != nil {
		return nil, cutSeries{}, fmt.Errorf("malformed snapshot: %w", err)
	}
	return s, cut, nil
}

// metricField is MetricFamily's field of series (dto.MetricFamily.Metric).
const metricField = 4

// splitFamilies splits a body of length-delimited MetricFamily messages,
// and counts each one's series, without decoding them.
func splitFamilies(body []byte) (msgs [][]byte, sizes []int, err error) {
	for len(body) > 0 {
		n, l := protowire.ConsumeVarint(body)
		if l < 0 || n > uint64(len(body)-l) {
			return nil, nil, errors.New("a family's length prefix is broken or exceeds the snapshot")
		}
		msg := body[l : l+int(n)]
		body = body[l+int(n):]
		count := 0
		for rest := msg; len(rest) > 0; {
			num, typ, tl := protowire.ConsumeTag(rest)
			if tl < 0 {
				return nil, nil, protowire.ParseError(tl)
			}
			vl := protowire.ConsumeFieldValue(num, typ, rest[tl:])
			if vl < 0 {
				return nil, nil, protowire.ParseError(vl)
			}
			if num == metricField {
				count++
			}
			rest = rest[tl+vl:]
		}
		msgs, sizes = append(msgs, msg), append(sizes, count)
	}
	return msgs, sizes, nil
}

// firstMetrics is a copy of the MetricFamily message msg (checked by
// splitFamilies) with only its first n series.
func firstMetrics(msg []byte, n int) []byte {
	out := make([]byte, 0, len(msg))
	for rest := msg; len(rest) > 0; {
		num, typ, tl := protowire.ConsumeTag(rest)
		vl := protowire.ConsumeFieldValue(num, typ, rest[tl:])
		if num != metricField || n > 0 {
			out = append(out, rest[:tl+vl]...)
		}
		if num == metricField {
			n--
		}
		rest = rest[tl+vl:]
	}
	return out
}

// hostWide reports whether family name counts for more than its process:
// the process collector's network counters read /proc/self/net/dev, the
// whole network namespace's, which summed over the workers would count
// the same bytes once a worker (the supervisor's own collector shows them
// once, as clusterflock_supervisor_process_network_*).
func hostWide(name string) bool {
	return strings.HasPrefix(name, "process_network_")
}

// seriesCap is the most series each family may keep for the families of
// sizes to hold at most limit series in all, cutting the largest first;
// -1 if they fit.
func seriesCap(sizes []int, limit int) int {
	sorted := slices.Clone(sizes)
	slices.Sort(sorted)
	left := limit
	for i, n := range sorted {
		k := len(sorted) - i
		if n > left/k {
			return left / k
		}
		left -= n
	}
	return -1
}

// checkNames checks mf's metric and label names and label values, as the
// Prometheus data model (UTF-8 names) requires.
func checkNames(mf *dto.MetricFamily) error {
	if !model.UTF8Validation.IsValidMetricName(mf.GetName()) {
		return fmt.Errorf("invalid metric name %q", mf.GetName())
	}
	for _, m := range mf.Metric {
		for _, l := range m.GetLabel() {
			if !model.UTF8Validation.IsValidLabelName(l.GetName()) {
				return fmt.Errorf("metric %q: invalid label name %q", mf.GetName(), l.GetName())
			}
			if !model.LabelValue(l.GetValue()).IsValid() {
				return fmt.Errorf("metric %q: invalid label value %q", mf.GetName(), l.GetValue())
			}
		}
	}
	return nil
}

// cutShort reports whether err is a channel that ended inside a frame: its
// worker exited, or was killed, while writing it.
func cutShort(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}
