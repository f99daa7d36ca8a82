package sockets

import (
	"context"
	"github.com/clusterflock/clusterflock/reuseport"
	"net"
	"slices"
	"testing"
	"time"
)

// landings connects n times to g's address and reports, per socket of g (in
// the order given), how many of those connections it received.
func landings(t *testing.T, g *Group, socks []*Socket, n int) []int {
	t.Helper()
	for range n {
		c, err := net.DialTimeout("tcp", g.Addr(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// Every connection is queued by now (the handshake completed on
	// loopback); poll the queues until they hold all n, bounded.
	counts := make([]int, len(socks))
	deadline := time.Now().Add(5 * time.Second)
	for {
		total := 0
		for i, f := range socks {
			q, err := f.AcceptQueue()
			if err != nil {
				t.Fatal(err)
			}
			counts[i] = q
			total += q
		}
		if total == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections queued after 5s: %v", total, n, counts)
		}
		time.Sleep(time.Millisecond)
	}
	for _, s := range socks { // empty the queues for the next round
		f, err := s.File()
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		tl := ln.(*net.TCPListener)
		for {
			q, _ := s.AcceptQueue()
			if q == 0 {
				break
			}
			c, err := tl.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		ln.Close()
	}
	return counts
}

// newTestGroup returns an empty group on 127.0.0.1, closed at the end of
// the test, or skips the test where classic BPF steering is not available.
func newTestGroup(t *testing.T) *Group {
	t.Helper()
	if err := CheckSteering(); err != nil {
		t.Skipf("classic BPF steering not available here: %v", err)
	}
	g, err := NewGroup("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.CloseAll)
	return g
}

func TestGroupSteering(t *testing.T) {
	g := newTestGroup(t)
	var s [4]*Socket
	for i := range s {
		var err error
		if s[i], err = g.Listen(); err != nil {
			t.Fatal(err)
		}
	}
	all := s[:]
	const n = 40

	// Only s[1]: every connection lands there.
	if err := g.Steer([]*Socket{s[1]}); err != nil {
		t.Fatal(err)
	}
	if got, want := landings(t, g, all, n), []int{0, n, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("steered to socket 1: landings %v, want %v", got, want)
	}
	// Away from s[0] and s[2]: none there, both others get some.
	if err := g.Steer([]*Socket{s[1], s[3]}); err != nil {
		t.Fatal(err)
	}
	got := landings(t, g, all, n)
	if got[0] != 0 || got[2] != 0 || got[1] == 0 || got[3] == 0 {
		t.Errorf("steered to sockets 1 and 3: landings %v", got)
	}

	// Closing s[0] moves the last socket (s[3]) to index 0: the mirror must
	// follow, or steering to s[3] would send connections to the wrong one.
	if err := g.Close(s[0]); err != nil {
		t.Fatal(err)
	}
	if i := g.Index(s[3]); i != 0 {
		t.Fatalf("after closing index 0, the last socket has index %d, want 0", i)
	}
	rest := []*Socket{s[1], s[2], s[3]}
	if err := g.Steer([]*Socket{s[3]}); err != nil {
		t.Fatal(err)
	}
	if got, want := landings(t, g, rest, n), []int{0, 0, n}; !slices.Equal(got, want) {
		t.Errorf("after Close, steered to the moved socket: landings %v, want %v", got, want)
	}
	// Close re-applies the target set for the new order.
	if err := g.Steer([]*Socket{s[2], s[3]}); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(s[1]); err != nil {
		t.Fatal(err)
	}
	got = landings(t, g, []*Socket{s[2], s[3]}, n)
	if got[0] == 0 || got[1] == 0 {
		t.Errorf("after closing a socket outside the target set: landings %v, want both used", got)
	}
	// A socket outside the group's mirror (another process's, appended by
	// the kernel) gets nothing while the group steers to its own...
	foreign, err := reuseport.Listen(context.Background(), "tcp", g.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	ff, err := HoldListener(foreign)
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	if err := g.Steer([]*Socket{s[2], s[3]}); err != nil {
		t.Fatal(err)
	}
	if got := landings(t, g, []*Socket{s[2], s[3], ff}, n); got[2] != 0 || got[0] == 0 || got[1] == 0 {
		t.Errorf("steered to the group's two sockets with a foreign one present: landings %v", got)
	}
	// ...and its share of the kernel's hash when there is no target.
	if err := g.Steer(nil); err != nil {
		t.Fatal(err)
	}
	if got := landings(t, g, []*Socket{s[2], s[3], ff}, 3*n); got[0] == 0 || got[1] == 0 || got[2] == 0 {
		t.Errorf("no target (hash): landings %v, want all three used", got)
	}
}

func TestAdoptGroup(t *testing.T) {
	g := newTestGroup(t)
	for range 2 {
		if _, err := g.Listen(); err != nil {
			t.Fatal(err)
		}
	}
	a, err := AdoptGroup(g.Sockets())
	if err != nil {
		t.Fatal(err)
	}
	if a.Addr() != g.Addr() || a.Len() != 2 {
		t.Errorf("adopted group: %s with %d sockets, want %s with 2", a.Addr(), a.Len(), g.Addr())
	}
	if err := a.Steer(a.Sockets()[1:]); err != nil {
		t.Fatal(err)
	}
	if got, want := landings(t, a, a.Sockets(), 10), []int{0, 10}; !slices.Equal(got, want) {
		t.Errorf("adopted group steered to its second socket: landings %v, want %v", got, want)
	}
	if _, err := AdoptGroup(nil); err == nil {
		t.Error("AdoptGroup(nil) succeeded")
	}
}

func TestSteerProgram(t *testing.T) {
	if p := steerProgram(nil); len(p) != 1 || p[0].K != 0xffffffff {
		t.Errorf("no target: %v, want one ret of an index past the group (the kernel's hash)", p)
	}
	if p := steerProgram([]uint32{2}); len(p) != 1 || p[0].K != 2 {
		t.Errorf("one target: %v, want ret 2", p)
	}
	if p := steerProgram([]uint32{0, 2, 5}); len(p) != 2+2*2+1 {
		t.Errorf("three targets: %d instructions, want 7", len(p))
	}
}
