package reuseport_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/clusterflock/clusterflock/reuseport"
)

// Two listeners share one address, as the workers of a pool do.
func ExampleListen() {
	a, err := reuseport.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	b, err := reuseport.Listen(context.Background(), "tcp", a.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	fmt.Println(a.Addr().String() == b.Addr().String())
	// Output: true
}

// A listener is plain TCP, never multipath TCP.
func TestListenIsPlainTCP(t *testing.T) {
	ln, err := reuseport.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if mp, err := a.(*net.TCPConn).MultipathTCP(); err != nil || mp {
		t.Errorf("accepted connection: MultipathTCP() = %v, %v; want false", mp, err)
	}
}
