package proto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// The fuzz targets below cover every parser of what another process hands
// this one: the worker and upgrade markers (environment variables), a
// standby's activation line (a unix socket), the status pipe (a worker's
// arbitrary output) and a heartbeat's load. Each checks that the parser
// does not panic, that what it accepts is within the documented ranges, and
// that an accepted value survives its encoding: parse(s) = v ⇒
// parse(encode(v)) = v and encode(v) is a fixed point. Run one with, e.g.,
//
//	go test -run '^$' -fuzz '^FuzzParseWorkerEnv$' ./internal/proto
//
// .ci/fuzz runs each briefly.

// FuzzParseWorkerEnv fuzzes the value of EnvWorker.
func FuzzParseWorkerEnv(f *testing.F) {
	for _, w := range []WorkerEnv{
		{SupervisorPID: 42, Slot: 3, Generation: 1, Migration: "ebpf", Addr: "127.0.0.1:5000"},
		{SupervisorPID: 42, Slot: StandbySlot, Migration: "cbpf", Inherited: true, Addr: "[::1]:80"},
		{SupervisorPID: 1, Addr: ":0"},
	} {
		f.Add(w.Encode())
	}
	for _, s := range []string{
		"", ":", ":::::", "1", "x:0:0::own:a", "0:0:0::own:a", "42:-2:0::own:a", "42:0:-1::own:a",
		"42:0:0:a:own:", "42:0:0:ebpf:x:a", "+42:0:0:ebpf:own:a", "042:00:-0:ebpf:fd:a:b:c",
		"9223372036854775808:0:0::own:a", "42:0:0:ebpf:own:\x00\n", "42:0:0:ébpf:fd:[fe80::1%eth0]:80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWorkerEnv(s)
		if err != nil {
			if w != (WorkerEnv{}) {
				t.Errorf("ParseWorkerEnv(%q) failed (%v) but returned %+v", s, err, w)
			}
			if !strings.Contains(err.Error(), EnvWorker) {
				t.Errorf("ParseWorkerEnv(%q): error %q does not name %s", s, err, EnvWorker)
			}
			return
		}
		if w.SupervisorPID <= 0 || w.Slot < StandbySlot || w.Generation < 0 || w.Addr == "" || strings.Contains(w.Migration, ":") {
			t.Fatalf("ParseWorkerEnv(%q) = %+v: out of range", s, w)
		}
		roundTrip(t, s, w, ParseWorkerEnv)
	})
}

// FuzzParseUpgradeEnv fuzzes the value of EnvUpgrade.
func FuzzParseUpgradeEnv(f *testing.F) {
	for _, u := range []UpgradeEnv{
		{OldPID: 7, Addr: "127.0.0.1:5000"},
		{OldPID: 7, Shared: true, Addr: "[::1]:80"},
		{OldPID: 1, Socks: 3, Addr: ":5000"},
	} {
		f.Add(u.Encode())
	}
	for _, s := range []string{
		"", ":::", "7:0:127.0.0.1:5000", "0:0:0:a", "7:2:0:a", "7:0:-1:a", "7:1:2:a", "7:0:0:",
		"+7:1:-0:a", "07:0:0003:a:b", "7:0:9223372036854775808:a", "7:1:0:\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUpgradeEnv(s)
		if err != nil {
			if u != (UpgradeEnv{}) {
				t.Errorf("ParseUpgradeEnv(%q) failed (%v) but returned %+v", s, err, u)
			}
			if !strings.Contains(err.Error(), EnvUpgrade) {
				t.Errorf("ParseUpgradeEnv(%q): error %q does not name %s", s, err, EnvUpgrade)
			}
			return
		}
		if u.OldPID <= 0 || u.Socks < 0 || (u.Shared && u.Socks > 0) || u.Addr == "" {
			t.Fatalf("ParseUpgradeEnv(%q) = %+v: out of range", s, u)
		}
		roundTrip(t, s, u, ParseUpgradeEnv)
	})
}

// FuzzParseActivation fuzzes a standby's activation line.
func FuzzParseActivation(f *testing.F) {
	for _, a := range []Activation{{Slot: 0}, {Slot: 3, Generation: 2, Socket: true}} {
		f.Add(a.Encode())
	}
	for _, s := range []string{
		"", "\n", "1 2\n", "1 2 1", "-1 0 0\n", "1 -2 0\n", "1 2 3\n", "a 2 0\n", "1 2 0 4\n",
		" +1\t02  1 \r\n", "1\u00a02\u20281\n", "9223372036854775808 0 0\n", "1 2 0\n\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseActivation(s)
		if err != nil {
			if a != (Activation{}) {
				t.Errorf("ParseActivation(%q) failed (%v) but returned %+v", s, err, a)
			}
			return
		}
		if a.Slot < 0 || a.Generation < 0 || !strings.HasSuffix(s, "\n") {
			t.Fatalf("ParseActivation(%q) = %+v: out of range", s, a)
		}
		roundTrip(t, s, a, ParseActivation)
	})
}

// FuzzParseLoad fuzzes a heartbeat's text, which a worker writes.
func FuzzParseLoad(f *testing.F) {
	for _, l := range []Load{{}, {Served: 12345, InFlight: 3}, {Served: 1<<63 - 1, InFlight: 1<<63 - 1}} {
		f.Add(l.Encode())
	}
	for _, s := range []string{
		"", " ", "1", "1 ", " 1", "1 2 3", "1  2", "-1 0", "0 -1", "+1 +2", "01 002", "-0 -0",
		"9223372036854775808 0", "0x10 1", "1_000 1", "1\t2", "\u0661 2", "1 2\r",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := ParseLoad(s)
		if !ok {
			if l != (Load{}) {
				t.Errorf("ParseLoad(%q) failed but returned %+v", s, l)
			}
			return
		}
		if l.Served < 0 || l.InFlight < 0 {
			t.Fatalf("ParseLoad(%q) = %+v: out of range", s, l)
		}
		enc := roundTrip(t, s, l, func(s string) (Load, error) {
			l, ok := ParseLoad(s)
			if !ok {
				return l, errors.New("not a load")
			}
			return l, nil
		})
		// It travels as a heartbeat's text: one line, read back as written.
		var b bytes.Buffer
		Write(&b, Message{Kind: Heartbeat, Text: enc})
		if m, err := NewReader(&b).Next(); err != nil || m != (Message{Kind: Heartbeat, Text: enc}) {
			t.Fatalf("heartbeat %q reads as %+v, %v", enc, m, err)
		}
	})
}

// fuzzStreamMax bounds the status-pipe stream FuzzReader builds: over twice
// the Reader's line limit, so that a huge line and what follows it, or a
// flood of lines, are in reach.
const fuzzStreamMax = 160 << 10

// fuzzMaxError bounds the text of any error Next returns: it ends up in the
// supervisor's events and logs, and must not carry a worker's whole line.
const fuzzMaxError = 1 << 10

// FuzzReader fuzzes the status pipe: the stream is data repeated 1+repeat
// times (at most fuzzStreamMax bytes), so that a short input can make a
// huge line or a flood of lines. It is read twice, at once and in reads of
// 1+chunk bytes (or at least a 256th of the stream, lest a huge line cost
// quadratic time in the Scanner), and both must yield the same messages and
// errors. The messages read, written back with Write, must read as the
// same messages.
func FuzzReader(f *testing.F) {
	var valid bytes.Buffer
	for _, m := range []Message{
		{Kind: Ready}, {Kind: Heartbeat}, {Kind: Failed, Text: "listen tcp: address already in use"},
		{Kind: Retiring, Text: "max requests"}, {Kind: Standby},
	} {
		Write(&valid, m)
	}
	f.Add(valid.Bytes(), uint16(0), uint8(0))
	f.Add(valid.Bytes(), uint16(50), uint8(6))
	for _, s := range []string{
		"", "\n", "\r\n", "ready", "ready \n", "bogus line\nready\n", "failed a\r\nfailed b\r\r\n",
		"failed \xff\xfe\x00\n", "READY\n", "heartbeat\nheartbeat", " ready\n", "ready-2 x\n",
		"failed " + strings.Repeat("\xe2\x82\xac", 40) + "\nnot-a-kind \xe2\x82\xac" + strings.Repeat("\xff", 100) + "\n",
	} {
		f.Add([]byte(s), uint16(0), uint8(0))
	}
	f.Add([]byte("xx"), uint16(32<<10), uint8(255))           // one line over the limit
	f.Add([]byte("failed "), uint16(9361), uint8(254))        // a line just under it
	f.Add([]byte("heartbeat\n"), uint16(16000), uint8(100))   // a flood
	f.Add([]byte("\n"), uint16(65535), uint8(17))             // a flood of empty lines
	f.Add([]byte("ready xxxxxxxxxx"), uint16(8000), uint8(3)) // a huge line, then EOF
	f.Fuzz(func(t *testing.T, data []byte, repeat uint16, chunk uint8) {
		n := min(len(data)*(1+int(repeat)), fuzzStreamMax)
		stream := bytes.Repeat(data, 1+n/max(len(data), 1))[:n]
		whole := fuzzReadAll(t, bytes.NewReader(stream), len(stream))
		size := max(1+int(chunk), len(stream)/256)
		chunked := fuzzReadAll(t, &chunkReader{b: stream, n: size}, len(stream))
		if len(whole) != len(chunked) {
			t.Fatalf("%d results at once, %d in reads of %d bytes", len(whole), len(chunked), size)
		}
		for i := range whole {
			if whole[i] != chunked[i] {
				t.Fatalf("result %d: %s at once, %s in reads of %d bytes", i, brief(whole[i]), brief(chunked[i]), size)
			}
		}
		// What was read, written back, reads as what was read.
		var b bytes.Buffer
		var want []readResult
		for _, r := range whole {
			if r.err == "" {
				if err := Write(&b, r.m); err != nil {
					t.Fatal(err)
				}
				want = append(want, r)
			}
		}
		written := b.String()
		want = append(want, readResult{err: io.EOF.Error()})
		back := fuzzReadAll(t, &b, b.Len())
		for i := range max(len(want), len(back)) {
			if i >= len(want) || i >= len(back) || want[i] != back[i] {
				t.Fatalf("read %d messages; written back as %s, message %d reads as %s, want %s",
					len(want)-1, brief(written), i, brief(back[min(i, len(back)-1)]), brief(want[min(i, len(want)-1)]))
			}
		}
	})
}

// readResult is one Reader.Next result, comparable.
type readResult struct {
	m   Message
	err string
}

// fuzzReadAll reads r with a Reader until io.EOF or an error it does not
// read past, checking each result, and returns them. A stream of size bytes
// yields at most size+1 results (each line takes at least one byte).
func fuzzReadAll(t *testing.T, r io.Reader, size int) []readResult {
	t.Helper()
	rd := NewReader(r)
	var out []readResult
	for {
		if len(out) > size+1 {
			t.Fatalf("more than %d results from a stream of %d bytes", size+1, size)
		}
		m, err := rd.Next()
		res := readResult{m: m}
		if err != nil {
			res.err = err.Error()
			if len(res.err) > fuzzMaxError {
				t.Fatalf("an error of %d bytes: %s", len(res.err), brief(res.err))
			}
		}
		out = append(out, res)
		switch {
		case err == io.EOF:
			if m != (Message{}) {
				t.Fatalf("io.EOF with a message %s", brief(m))
			}
			return out
		case errors.Is(err, ErrUnknown):
			if knownKind(m.Kind) {
				t.Fatalf("ErrUnknown for a known kind: %s", brief(m))
			}
			continue
		case err != nil:
			// Any other error ends the stream: the Reader stays there.
			if m != (Message{}) {
				t.Fatalf("%v with a message %s", err, brief(m))
			}
			if m2, err2 := rd.Next(); err2 == nil || err2.Error() != res.err || m2 != (Message{}) {
				t.Fatalf("after %v, Next returned %s, %v", err, brief(m2), err2)
			}
			return out
		}
		if !knownKind(m.Kind) {
			t.Fatalf("Next returned a message of unknown kind %s without an error", brief(m.Kind))
		}
		if strings.Contains(m.Text, "\n") {
			t.Fatalf("Next returned a message whose text holds a newline: %s", brief(m))
		}
	}
}

// brief formats v for a failure message: quoted, and cut short.
func brief(v any) string {
	s := fmt.Sprintf("%+q", v)
	if len(s) > 200 {
		s = s[:200] + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return s
}

// knownKind reports whether k is one of the message kinds.
func knownKind(k Kind) bool {
	switch k {
	case Ready, Heartbeat, Failed, Retiring, Standby:
		return true
	}
	return false
}

// chunkReader reads b in reads of at most n bytes.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[k:]
	return k, nil
}

// roundTrip checks that v, parsed from s, encodes to a string that parses
// back as v and encodes the same again; it returns that encoding.
func roundTrip[T interface {
	comparable
	Encode() string
}](t *testing.T, s string, v T, parse func(string) (T, error)) string {
	t.Helper()
	enc := v.Encode()
	v2, err := parse(enc)
	if err != nil || v2 != v {
		t.Fatalf("%q parses as %+v, but its encoding %q parses as %+v, %v", s, v, enc, v2, err)
	}
	if enc2 := v2.Encode(); enc2 != enc {
		t.Fatalf("encoding %q re-encodes as %q", enc, enc2)
	}
	return enc
}
