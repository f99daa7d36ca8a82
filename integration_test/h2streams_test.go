//go:build linux

package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nghttpStreams is what nghttp's verbose output says of one connection:
// the streams whose HEADERS it sent, those that ended with the server's
// END_STREAM, and the last stream identifiers of the GOAWAYs it received.
type nghttpStreams struct {
	sent, answered map[int]bool
	goAways        []int
}

var (
	nghttpSentRe   = regexp.MustCompile(`send HEADERS frame <.*stream_id=(\d+)>`)
	nghttpEndRe    = regexp.MustCompile(`recv (?:DATA|HEADERS) frame <length=\d+, flags=0x(?:01|05|0d|09), stream_id=(\d+)>`)
	nghttpGoAwayRe = regexp.MustCompile(`last_stream_id=(\d+)`)
)

// parseNghttp reads nghttp -v output.
func parseNghttp(out string) nghttpStreams {
	s := nghttpStreams{sent: map[int]bool{}, answered: map[int]bool{}}
	recvGoAway := false
	for line := range strings.Lines(out) {
		if m := nghttpSentRe.FindStringSubmatch(line); m != nil {
			id, _ := strconv.Atoi(m[1])
			s.sent[id] = true
		}
		if m := nghttpEndRe.FindStringSubmatch(line); m != nil {
			id, _ := strconv.Atoi(m[1])
			s.answered[id] = true
		}
		if m := nghttpGoAwayRe.FindStringSubmatch(line); m != nil && recvGoAway {
			id, _ := strconv.Atoi(m[1])
			s.goAways = append(s.goAways, id)
		}
		recvGoAway = strings.Contains(line, "recv GOAWAY frame")
	}
	return s
}

// waitAnswered waits until nghttp's log at path shows n streams ended by
// the server: its load is under way.
func waitAnswered(t *testing.T, path string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if got := len(nghttpEndRe.FindAllIndex(b, -1)); got >= n {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("nghttp's log shows %d answered streams after %v, want %d", got, timeout, n)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// lost returns the streams sent and never answered, at most 5 of them.
func (s nghttpStreams) lost() (n int, some []int) {
	for id := range s.sent {
		if !s.answered[id] {
			n++
			if len(some) < 5 {
				some = append(some, id)
			}
		}
	}
	return n, some
}

// TestH2StreamsThroughHUP: every HTTP/2 stream a client sends through a
// rolling restart is answered, over h2c and over TLS (ALPN h2). nghttp
// multiplexes up to 100 streams on one connection, and its frame log says
// which streams it sent (HEADERS on the wire) and which the server ended:
// the accounting h2load cannot give (it counts as failed the requests it
// queued and then did not send because of the GOAWAY). The first GOAWAY a
// draining worker sends forbids new streams (last stream 2^31-1); Go's
// HTTP/2 server alone sent only its own, with the last stream it had read,
// and the streams in flight towards it were refused (119 of 24,359 over
// h2c, 175 of 19,675 over TLS, in one HUP each).
func TestH2StreamsThroughHUP(t *testing.T) {
	nghttp := clientBinary(t, "nghttp", "nghttp2-client")
	for _, c := range []struct{ mode, scheme string }{{"h2c", "http"}, {"tls", "https"}} {
		t.Run(c.mode, func(t *testing.T) {
			p := startPool(t, poolConfig{mode: c.mode, workers: 2})
			for i := range 3 {
				out := filepath.Join(t.TempDir(), "nghttp.txt")
				h := startClient(t, "sh", "-c", `exec "$0" -nv -m 100000 "$1" >"$2" 2>&1`, nghttp, c.scheme+"://"+p.addr+"/", out)
				waitAnswered(t, out, 2000, 20*time.Second)
				p.rollingRestart(2)
				select {
				case <-h.done: // it ends after the GOAWAY: it sends no more
				case <-time.After(20 * time.Second):
					p.fatalf("HUP %d: nghttp still running 20 s after the rolling restart", i+1)
				}
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				s := parseNghttp(string(b))
				n, some := s.lost()
				label := fmt.Sprintf("nghttp over %s, HUP %d of 3", c.mode, i+1)
				t.Logf("%s: %d streams sent, %d of them answered; GOAWAYs received with last streams %v", label, len(s.sent), len(s.sent)-n, s.goAways)
				if len(s.goAways) == 0 || s.goAways[0] != 1<<31-1 {
					p.errorf("%s: GOAWAYs %v; want the first with last stream 2147483647", label, s.goAways)
				}
				if len(s.sent) < 2000 {
					p.errorf("%s: only %d streams sent before the restart", label, len(s.sent))
				}
				if n > 0 {
					p.errorf("%s: %d of %d streams sent and never answered (e.g. %v); want 0", label, n, len(s.sent), some)
				}
			}
		})
	}
}
