//go:build unix

package supervisorproc

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeNotifier records notifications.
type fakeNotifier struct{ sent []string }

func (f *fakeNotifier) Enabled() bool { return true }
func (f *fakeNotifier) Notify(state string) error {
	f.sent = append(f.sent, state)
	return nil
}

// The pool's changes map to systemd's states; after a binary upgrade has
// handed MAINPID over, this supervisor tells systemd nothing more (its
// STOPPING=1 would stop the service).
func TestSystemdMapping(t *testing.T) {
	n := &fakeNotifier{}
	sd := &systemd{n: n, log: slog.New(slog.DiscardHandler), addr: "127.0.0.1:5000"}
	sd.poolReady(2)
	sd.restart("begin")
	sd.restart("aborted: a new worker failed to start: exit status 1")
	sd.restart("done")
	sd.poolReady(2)
	sd.mainPID(42)
	sd.stopping("graceful: requested")
	sd.poolReady(2)

	for i, s := range n.sent {
		if strings.HasPrefix(s, "RELOADING=1\nMONOTONIC_USEC=") {
			n.sent[i] = "RELOADING=1\nMONOTONIC_USEC=…" + s[strings.Index(s, "\nSTATUS="):]
		}
	}
	want := []string{
		"READY=1\nSTATUS=2 workers serving on 127.0.0.1:5000",
		"RELOADING=1\nMONOTONIC_USEC=…\nSTATUS=rolling restart",
		"READY=1\nSTATUS=rolling restart aborted: a new worker failed to start: exit status 1",
		"READY=1\nSTATUS=2 workers serving on 127.0.0.1:5000",
		"MAINPID=42",
	}
	if diff := cmp.Diff(want, n.sent); diff != "" {
		t.Errorf("notifications (-want +got):\n%s", diff)
	}
}

// A stop that is not a hand-over says STOPPING=1 with the reason.
func TestSystemdStopping(t *testing.T) {
	n := &fakeNotifier{}
	sd := &systemd{n: n, log: slog.New(slog.DiscardHandler), addr: ":5000"}
	sd.stopping("immediate: requested")
	if diff := cmp.Diff([]string{"STOPPING=1\nSTATUS=stopping (immediate: requested)"}, n.sent); diff != "" {
		t.Errorf("notifications (-want +got):\n%s", diff)
	}
}

// TestInBuildCache: go run's binaries are recognised, others are not.
func TestInBuildCache(t *testing.T) {
	for path, want := range map[string]bool{
		"/tmp/go-build3859162/b001/exe/hello":              true,
		"/home/u/.cache/go-build/tmp/go-build1/b001/exe/x": true,
		"/usr/local/bin/hello":                             false,
		"/home/u/src/go-builder/exe/hello":                 false,
	} {
		if got := inBuildCache(path); got != want {
			t.Errorf("inBuildCache(%q) = %t, want %t", path, got, want)
		}
	}
}
