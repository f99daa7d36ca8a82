package proto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWorkerEnvRoundTrip(t *testing.T) {
	for _, w := range []WorkerEnv{
		{SupervisorPID: 42, Slot: 3, Generation: 1, Migration: "ebpf", Addr: "127.0.0.1:5000"},
		{SupervisorPID: 42, Slot: -1, Migration: "cbpf", Inherited: true, Addr: "127.0.0.1:5000"},
		{SupervisorPID: 7, Addr: "[::1]:80"},
		{SupervisorPID: 7, Addr: ":0"},
		{SupervisorPID: 1, Addr: ":80"}, // the supervisor is PID 1 in a container
	} {
		got, err := ParseWorkerEnv(w.Encode())
		if err != nil {
			t.Fatalf("ParseWorkerEnv(%q): %v", w.Encode(), err)
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestParseWorkerEnvRejects(t *testing.T) {
	for _, s := range []string{"", "1", "x:0:0::a", "0:0:0::a", "42:-2:0::a", "42:0:x::a", "42:0:0::", "42:0:0:a", "42:0:0:ebpf:x:a", "42:0:0:ebpf:own:"} {
		if _, err := ParseWorkerEnv(s); err == nil {
			t.Errorf("ParseWorkerEnv(%q) succeeded", s)
		}
	}
}

func TestMessages(t *testing.T) {
	var b bytes.Buffer
	want := []Message{{Kind: Ready}, {Kind: Heartbeat}, {Kind: Failed, Text: "listen tcp: address already in use"}, {Kind: Retiring, Text: "max requests"}, {Kind: Closed}}
	for _, m := range want {
		if err := Write(&b, m); err != nil {
			t.Fatal(err)
		}
	}
	b.WriteString("bogus line\n")
	Write(&b, Message{Kind: Failed, Text: "two\nlines"})
	r := NewReader(&b)
	var got []Message
	for range want {
		m, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if _, err := r.Next(); !errors.Is(err, ErrUnknown) {
		t.Errorf("bogus line: err %v, want ErrUnknown", err)
	}
	if m, err := r.Next(); err != nil || m.Text != "two lines" {
		t.Errorf("newline in text: %+v, %v", m, err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("at end: %v, want io.EOF", err)
	}
}

func TestUpgradeEnv(t *testing.T) {
	for _, u := range []UpgradeEnv{
		{OldPID: 7, Addr: "127.0.0.1:5000"},
		{OldPID: 7, Shared: true, Addr: "[::1]:80"},
		{OldPID: 7, Socks: 3, Addr: ":5000"},
	} {
		got, err := ParseUpgradeEnv(u.Encode())
		if err != nil || got != u {
			t.Errorf("round trip of %+v: %+v, %v", u, got, err)
		}
	}
	for _, bad := range []string{"", "7:0:127.0.0.1:5000", "0:0:0:a:1", "7:2:0:a:1", "7:0:-1:a:1", "7:1:2:a:1", "7:0:0:"} {
		if _, err := ParseUpgradeEnv(bad); err == nil {
			t.Errorf("ParseUpgradeEnv(%q) succeeded", bad)
		}
	}
}

// The pool size counts only if it names the supervisor that started this
// process: a value an older build passed on from its own environment after
// a rollback names another, earlier supervisor.
func TestUpgradeWorkers(t *testing.T) {
	ppid := os.Getppid()
	v := EncodeUpgradeWorkers(ppid, 3)
	if n, err := UpgradeWorkers(v, ppid); err != nil || n != 3 {
		t.Errorf("UpgradeWorkers(%q, %d) = %d, %v; want 3", v, ppid, n, err)
	}
	malformed := []string{"", "3", "0", ":3", "x:3", "-1:3", "0:3",
		fmt.Sprintf("%d:", ppid), fmt.Sprintf("%d:0", ppid), fmt.Sprintf("%d:-2", ppid),
		fmt.Sprintf("%d:3 ", ppid), fmt.Sprintf("%d:x", ppid), fmt.Sprintf("%d:99999999999999999999", ppid),
		fmt.Sprintf("%d:3:1", ppid)}
	for _, bad := range malformed {
		if n, err := UpgradeWorkers(bad, ppid); err == nil || !strings.Contains(err.Error(), "malformed "+EnvUpgradeWorkers) {
			t.Errorf("UpgradeWorkers(%q, %d) = %d, %v; want an error naming %s malformed", bad, ppid, n, err, EnvUpgradeWorkers)
		}
	}
	stale := []struct {
		value  string
		oldPID int
	}{
		{EncodeUpgradeWorkers(ppid+1, 6), ppid},     // set by an earlier supervisor, passed on
		{EncodeUpgradeWorkers(ppid+1, 6), ppid + 1}, // names the marker's PID, but that is not our parent
	}
	for _, c := range stale {
		if n, err := UpgradeWorkers(c.value, c.oldPID); err == nil || !strings.Contains(err.Error(), "stale") {
			t.Errorf("UpgradeWorkers(%q, %d) = %d, %v; want an error saying the value is stale", c.value, c.oldPID, n, err)
		}
	}
}

func TestActivationRoundTrip(t *testing.T) {
	for _, a := range []Activation{{Slot: 0}, {Slot: 3, Generation: 2, Socket: true}} {
		got, err := ParseActivation(a.Encode())
		if err != nil || got != a {
			t.Errorf("ParseActivation(%q) = %+v, %v; want %+v", a.Encode(), got, err, a)
		}
	}
	for _, s := range []string{"", "1 2\n", "1 2 1", "-1 0 0\n", "1 -2 0\n", "1 2 3\n", "a 2 0\n", "1 2 0 4\n"} {
		if _, err := ParseActivation(s); err == nil {
			t.Errorf("ParseActivation(%q) succeeded", s)
		}
	}
}

// A marker counts only if it names this process's parent.
func TestLookupWorker(t *testing.T) {
	t.Setenv(EnvWorker, WorkerEnv{SupervisorPID: os.Getppid(), Addr: ":1"}.Encode())
	if w, ok, err := LookupWorker(); !ok || err != nil || w.SupervisorPID != os.Getppid() {
		t.Errorf("a marker naming the parent: %+v, %v, %v", w, ok, err)
	}
	t.Setenv(EnvWorker, WorkerEnv{SupervisorPID: os.Getppid() + 1, Addr: ":1"}.Encode())
	if _, ok, err := LookupWorker(); !ok || err == nil {
		t.Errorf("a marker naming another process: %v, %v; want an error", ok, err)
	}
	t.Setenv(EnvUpgrade, UpgradeEnv{OldPID: os.Getppid(), Addr: ":1"}.Encode())
	if u, ok, err := LookupUpgrade(); !ok || err != nil || u.OldPID != os.Getppid() {
		t.Errorf("an upgrade marker naming the parent: %+v, %v, %v", u, ok, err)
	}
}
