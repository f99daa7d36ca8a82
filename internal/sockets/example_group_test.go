//go:build linux

package sockets_test

import (
	"fmt"
	"net"
	"time"

	"github.com/clusterflock/clusterflock/internal/sockets"
)

// A Group steers new connections among the listening sockets it holds,
// without privilege: here every connection goes to the second socket, as a
// supervisor would do while the first one's worker is leaving.
func ExampleGroup() {
	if err := sockets.CheckSteering(); err != nil {
		fmt.Println("classic BPF steering is not available:", err)
		return
	}
	g, err := sockets.NewGroup("127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer g.CloseAll()
	first, _ := g.Listen()
	second, _ := g.Listen()
	if err := g.Steer([]*sockets.Socket{second}); err != nil {
		fmt.Println(err)
		return
	}
	for range 3 {
		c, err := net.Dial("tcp", g.Addr())
		if err != nil {
			fmt.Println(err)
			return
		}
		defer c.Close()
	}
	// The handshakes completed on loopback; wait (bounded) until the
	// kernel has queued all three.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if n, _ := second.AcceptQueue(); n == 3 {
			break
		}
	}
	q1, _ := first.AcceptQueue()
	q2, _ := second.AcceptQueue()
	fmt.Println("queued on the first socket:", q1, "on the second:", q2)
	// Output: queued on the first socket: 0 on the second: 3
}
