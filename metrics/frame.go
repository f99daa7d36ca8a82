package metrics

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// The metrics channel between the supervisor and a worker is a unix stream
// socket. The supervisor writes one byte, gatherByte, to ask for a
// snapshot; the worker answers with a frame, and sends a last one when it
// has stopped serving. A frame is a 4-byte big-endian length, then that
// many bytes: a kind byte and its body. A snapshot's body is the worker's
// metric families in the Prometheus delimited protobuf format; an error's
// body is the text of what went wrong gathering (a snapshot follows it).

const gatherByte = 'g'

// Frame kinds.
const (
	frameSnapshot = 's'
	frameError    = 'e'
)

// maxFrame bounds a frame: a worker that sends more is cut off (its last
// good snapshot stays), and the supervisor never allocates more.
const maxFrame = 32 << 20

var errTooLarge = errors.New("frame larger than 32 MiB")

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
// frames; any other error leaves it unusable.
func readFrame(r io.Reader) (byte, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("truncated frame header")
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
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, fmt.Errorf("truncated frame: %w", err)
	}
	if buf[0] != frameSnapshot && buf[0] != frameError {
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

// decodeSnapshot parses and checks a snapshot body (see newSet).
func decodeSnapshot(body []byte) (set, error) {
	dec := expfmt.NewDecoder(bytes.NewReader(body), delimited)
	var mfs []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed snapshot: %w", err)
		}
		mfs = append(mfs, mf)
	}
	s, err := newSet(mfs)
	if err != nil {
		return nil, fmt.Errorf("malformed snapshot: %w", err)
	}
	return s, nil
}
