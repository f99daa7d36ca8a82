//go:build linux

package supervisorproc

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/internal/proto"
	"github.com/clusterflock/clusterflock/internal/sockets"
	"github.com/clusterflock/clusterflock/reuseport"
	"github.com/clusterflock/clusterflock/supervisor"
)

// newTestGroup returns an empty group on 127.0.0.1, closed at the end of
// the test, or skips the test where classic BPF steering is not available.
func newTestGroup(t *testing.T) *sockets.Group {
	t.Helper()
	if err := sockets.CheckSteering(); err != nil {
		t.Skipf("classic BPF steering not available here: %v", err)
	}
	g, err := sockets.NewGroup("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.CloseAll)
	return g
}

// follow tells s what the supervisor would for an event of kind.
func follow(s *steered, kind supervisor.EventKind, id, slot int) {
	w := supervisor.Worker{ID: id, Slot: slot}
	switch kind {
	case supervisor.EventSpawn:
		s.spawned(w)
	case supervisor.EventReady:
		s.ready(w)
	case supervisor.EventStop, supervisor.EventKill:
		s.stopping(w)
	case supervisor.EventExit:
		s.exited(w)
	}
}

// The steering follows the pool's events: a slot receives connections only
// while it has a ready worker and is not leaving; a released slot's socket
// closes once its last worker has exited; a hand-over waits for that.
func TestSteeringFollowsThePool(t *testing.T) {
	g := newTestGroup(t)
	s := newSteered(g, slog.New(slog.DiscardHandler), proto.NewTiming(400*time.Millisecond, 10*time.Second))
	targets := func() []*sockets.Socket {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.targetsLocked()
	}
	ev := func(kind supervisor.EventKind, id, slot int) { follow(s, kind, id, slot) }
	s0, err := s.socketFor(0)
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := s.socketFor(1)
	if again, _ := s.socketFor(0); again != s0 {
		t.Fatal("a second socketFor of slot 0 opened another socket")
	}
	ev(supervisor.EventSpawn, 1, 0)
	ev(supervisor.EventSpawn, 2, 1)
	if got := targets(); !slices.Equal(got, []*sockets.Socket{s0, s1}) {
		t.Fatal("before any worker is ready: want both sockets (connections wait for the workers)")
	}
	ev(supervisor.EventReady, 1, 0)
	if got := targets(); !slices.Equal(got, []*sockets.Socket{s0}) {
		t.Fatal("slot 0 ready, slot 1 starting: want only slot 0's socket")
	}
	ev(supervisor.EventReady, 2, 1)
	// A crash: the slot's socket stays (its queue waits) but gets nothing
	// new until the replacement is ready.
	ev(supervisor.EventExit, 1, 0)
	if got := targets(); !slices.Equal(got, []*sockets.Socket{s1}) {
		t.Fatal("slot 0's worker exited: want only slot 1's socket")
	}
	ev(supervisor.EventSpawn, 3, 0)
	ev(supervisor.EventReady, 3, 0)
	if got := targets(); len(got) != 2 || g.Len() != 2 {
		t.Fatalf("after the refork: %d targets, %d sockets; want 2 and 2", len(got), g.Len())
	}

	// TTOU of slot 1: steered away at once, its stop held until quiet.
	settled := s.leaving(1)
	if got := targets(); !slices.Equal(got, []*sockets.Socket{s0}) {
		t.Fatal("slot 1 released: want only slot 0's socket")
	}
	if settled == nil {
		t.Fatal("the released slot's worker is not held before its SIGTERM")
	}
	if _, busy := s.handOver(); busy == "" {
		t.Error("hand-over allowed while a retired worker drains")
	}
	select {
	case <-settled:
	case <-time.After(5 * time.Second):
		t.Fatal("the released slot never settled")
	}
	ev(supervisor.EventStop, 2, 1)
	if g.Len() != 2 {
		t.Fatal("the released slot's socket closed while its worker still runs")
	}
	ev(supervisor.EventExit, 2, 1)
	if g.Len() != 1 || g.Index(s0) != 0 {
		t.Fatalf("after the retired worker exited: %d sockets, slot 0 at index %d; want 1 at 0", g.Len(), g.Index(s0))
	}
	socks, busy := s.handOver()
	if busy != "" || !slices.Equal(socks, []*sockets.Socket{s0}) {
		t.Fatalf("hand-over: %v %q, want slot 0's socket", socks, busy)
	}
	s.upgradeFailed(false)

	// Every ready worker gone: the slots that stay take the connections
	// (they wait for the re-forks), never a slot that is leaving.
	s1b, _ := s.socketFor(1) // TTIN takes slot 1 again: a new socket
	ev(supervisor.EventSpawn, 4, 1)
	held := s.leaving(1)
	ev(supervisor.EventExit, 3, 0)
	if got := targets(); !slices.Equal(got, []*sockets.Socket{s0}) {
		t.Fatal("no ready worker, slot 1 leaving: want only slot 0's socket")
	}
	// Taken back while its worker still drains: it shares the socket, and
	// the old worker is let go at once.
	if again, _ := s.socketFor(1); again != s1b {
		t.Fatal("a released slot taken back got another socket")
	}
	select {
	case <-held:
	case <-time.After(time.Second):
		t.Fatal("taking a released slot back did not let its old worker stop")
	}
	ev(supervisor.EventExit, 4, 1)
	if g.Index(s1b) < 0 {
		t.Fatal("the taken-back slot's socket closed when its old worker exited")
	}

	// A released slot without workers closes at once.
	s2, _ := s.socketFor(2)
	s.leaving(2)
	if g.Index(s2) != -1 {
		t.Error("a released slot without workers kept its socket")
	}
	s.poolStopping()
	if g.Len() != 0 {
		t.Errorf("after the pool began stopping the supervisor still holds %d sockets", g.Len())
	}
}

// A new supervisor's adopted sockets count as served (by the old workers)
// until its own pool is ready; then only its ready workers count.
func TestSteeringAdopted(t *testing.T) {
	if err := sockets.CheckSteering(); err != nil {
		t.Skipf("classic BPF steering not available here: %v", err)
	}
	old, err := sockets.NewGroup("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer old.CloseAll()
	for range 2 {
		if _, err := old.Listen(); err != nil {
			t.Fatal(err)
		}
	}
	g, err := sockets.AdoptGroup(old.Sockets())
	if err != nil {
		t.Fatal(err)
	}
	s := newSteered(g, slog.New(slog.DiscardHandler), proto.NewTiming(time.Second, 10*time.Second))
	s.adopt()
	targets := func() []*sockets.Socket {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.targetsLocked()
	}
	if got := targets(); !slices.Equal(got, g.Sockets()) {
		t.Fatal("adopted sockets: want both served by the old workers")
	}
	if f, _ := s.socketFor(1); f != g.Sockets()[1] {
		t.Fatal("slot 1 of the new pool does not get the second adopted socket")
	}
	follow(s, supervisor.EventSpawn, 1, 0)
	follow(s, supervisor.EventReady, 1, 0)
	s.poolReady()
	if got := targets(); !slices.Equal(got, g.Sockets()[:1]) {
		t.Fatal("after pool-ready: want only the slot with a ready new worker")
	}
}

// A socket the supervisor does not hold in the group makes its order
// unknowable: steering is suspended (the kernel's hash chooses) and resumes
// once the socket is gone, both logged.
func TestSteeringSuspendedByForeignSocket(t *testing.T) {
	g := newTestGroup(t)
	var logs strings.Builder
	s := newSteered(g, slog.New(slog.NewTextHandler(&logs, nil)), proto.NewTiming(time.Second, 10*time.Second))
	if _, err := s.socketFor(0); err != nil {
		t.Fatal(err)
	}
	if err := g.Verify(); err != nil {
		t.Skipf("sock_diag cannot check the group here: %v", err)
	}
	foreign, err := reuseport.Listen(context.Background(), "tcp", g.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if g.Verify() == nil {
		foreign.Close()
		t.Skip("sock_diag does not see listeners here")
	}
	follow(s, supervisor.EventSpawn, 1, 0)
	follow(s, supervisor.EventReady, 1, 0)
	if !strings.Contains(logs.String(), "steering suspended") {
		t.Errorf("a foreign socket in the group: log %q, want steering suspended", logs.String())
	}
	foreign.Close()
	follow(s, supervisor.EventStop, 1, 0)
	if !strings.Contains(logs.String(), "steering resumed") {
		t.Errorf("the foreign socket gone: log %q, want steering resumed", logs.String())
	}
}
