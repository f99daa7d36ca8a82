//go:build unix

package supervisorproc

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterflock/clusterflock/supervisor"
)

// readAll feeds input to a process's status reader and returns what it
// forwards, and whether it reported the standby waiting.
func readAll(t *testing.T, input string, standby bool, maxRate int) ([]supervisor.Message, bool) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{status: r, standby: standby, maxRate: maxRate,
		msgs: make(chan supervisor.Message), readDone: make(chan struct{}), standing: make(chan struct{})}
	go p.read()
	go func() {
		w.WriteString(input)
		w.Close()
	}()
	var got []supervisor.Message
	for m := range p.msgs {
		got = append(got, m)
	}
	<-p.readDone
	select {
	case <-p.standing:
		return got, true
	default:
		return got, false
	}
}

func invalid(text string) supervisor.Message {
	return supervisor.Message{Kind: supervisor.MessageInvalid, Text: text}
}

// Whatever a worker writes on its status pipe is forwarded, skipped (a
// newer worker's message) or reported once as the worker's protocol
// violation, after which nothing more is read; never a panic.
func TestStatusReader(t *testing.T) {
	ready := supervisor.Message{Kind: supervisor.MessageReady}
	beat := supervisor.Message{Kind: supervisor.MessageHeartbeat}
	for _, tc := range []struct {
		name     string
		input    string
		standby  bool
		want     []supervisor.Message
		standing bool
	}{
		{"protocol", "ready\nheartbeat\nfailed cannot bind\nretiring served 5\n", false, []supervisor.Message{ready, beat,
			{Kind: supervisor.MessageFailed, Text: "cannot bind"}, {Kind: supervisor.MessageRetiring, Text: "served 5"}}, false},
		{"closed", "ready\nclosed\n", false, []supervisor.Message{ready, {Kind: supervisor.MessageClosed}}, false},
		{"newer worker's message", "metrics-v2 123\nready\n", false, []supervisor.Message{ready}, false},
		{"standby", "standby\nready\n", true, []supervisor.Message{ready}, true},
		{"standby twice", "standby\nstandby\nready\n", true, []supervisor.Message{invalid(`"standby" from a worker that is not a standby, or twice`)}, true},
		{"standby from a worker", "ready\nstandby\n", false, []supervisor.Message{ready, invalid(`"standby" from a worker that is not a standby, or twice`)}, false},
		{"garbage", "ready\n\x00\x01\xffGET / HTTP/1.1\nheartbeat\n", false, []supervisor.Message{ready, invalid(`unknown worker message: "\x00\x01\xffGET / HTTP/1.1"`)}, false},
		{"huge line", "ready\n" + strings.Repeat("x", 70<<10) + "\nheartbeat\n", false, []supervisor.Message{ready, invalid("worker message too long: a line of more than 65536 bytes")}, false},
		{"flood", strings.Repeat("heartbeat\n", 150), false, append(repeat(beat, 100), invalid("more than 100 messages in a second")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, standing := readAll(t, tc.input, tc.standby, 100)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
			if standing != tc.standing {
				t.Errorf("standing = %v, want %v", standing, tc.standing)
			}
		})
	}
}

func repeat(m supervisor.Message, n int) []supervisor.Message {
	out := make([]supervisor.Message, n)
	for i := range out {
		out[i] = m
	}
	return out
}
