//go:build unix

package workerproc

import (
	"os"
	"testing"

	"github.com/clusterflock/clusterflock/internal/proto"
)

// A standby serves only a well-formed activation, with the socket exactly
// when the activation announces one.
func TestActivated(t *testing.T) {
	file := func() *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		return r
	}
	env := proto.WorkerEnv{SupervisorPID: 1, Slot: proto.StandbySlot, Addr: "a"}
	for _, tc := range []struct {
		name     string
		a        activation
		serve    bool
		wantErr  bool
		wantSlot int
		wantSock bool
	}{
		{"closed", activation{line: ""}, false, false, -1, false},
		{"garbage", activation{line: "x y\n"}, false, false, -1, false},
		{"no socket", activation{line: "2 1 0\n"}, true, false, 2, false},
		{"socket", activation{line: "1 0 1\n", ln: file()}, true, false, 1, true},
		{"socket missing", activation{line: "1 0 1\n", truncated: true}, false, true, 1, false},
		{"socket unannounced", activation{line: "1 0 0\n", ln: file()}, false, true, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ln, ok, err := activated(env, tc.a)
			if ok != tc.serve || (err != nil) != tc.wantErr || (ln != nil) != tc.wantSock {
				t.Fatalf("activated(%q) = listener %v, %v, %v; want serve %v, error %v, socket %v", tc.a.line, ln != nil, ok, err, tc.serve, tc.wantErr, tc.wantSock)
			}
			if ok && got.Slot != tc.wantSlot {
				t.Errorf("slot %d, want %d", got.Slot, tc.wantSlot)
			}
			if ln != nil {
				ln.Close()
			}
		})
	}
}
