// Command sysmon-repro reproduces, without clusterflock, the Go runtime
// behaviour that makes a half-loaded GOMAXPROCS=1 process pay more per
// request than a busy one (bench/SYSMON.md).
//
// It starts a child process, a one-byte TCP echo server on 127.0.0.1 with
// GOMAXPROCS=1, and drives it from this process with closed-loop
// connections: 1 connection (the server goes idle after every reply, like a
// worker that carries part of a pool's load) and 16 (the server always has
// work). Each load runs with the default runtime and with
// GODEBUG=schedtrace=2147483647, which keeps sysmon out of its deep sleep.
// For each it prints messages per second, the child's context switches per
// message (all threads), those of sysmon's thread alone (the first thread
// runtime.main starts), and the child's CPU time per message.
//
//	go run ./cmd/sysmon-repro [-d 3s]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	child := flag.Bool("child", false, "run as the echo server (internal)")
	dur := flag.Duration("d", 3*time.Second, "duration of each measurement")
	flag.Parse()
	if *child {
		echoServer()
		return
	}
	fmt.Println("| runtime | connections | msgs/s | ctxsw/msg (all threads) | sysmon wake-ups/msg | CPU µs/msg |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, conns := range []int{1, 16} {
		for _, godebug := range []string{"", "schedtrace=2147483647"} {
			r, err := measure(godebug, conns, *dur)
			if err != nil {
				fmt.Fprintln(os.Stderr, "sysmon-repro:", err)
				os.Exit(1)
			}
			name := "default"
			if godebug != "" {
				name = "GODEBUG=" + godebug
			}
			fmt.Printf("| %s | %d | %.0f | %.2f | %.2f | %.1f |\n", name, conns,
				float64(r.msgs)/dur.Seconds(), r.per(r.ctxsw), r.per(r.sysmon), r.per(r.cpuNs)/1000)
		}
	}
}

// echoServer answers every byte with the same byte, one goroutine per
// connection, through the net package's poller like any Go server.
func echoServer() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 1)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

type result struct {
	msgs, ctxsw, sysmon, cpuNs uint64
}

func (r result) per(n uint64) float64 { return float64(n) / float64(max(r.msgs, 1)) }

// measure runs one child and drives it with conns closed-loop connections
// for d.
func measure(godebug string, conns int, d time.Duration) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(self, "-child")
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "GODEBUG="+godebug)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return result{}, fmt.Errorf("child gave no address: %w", err)
	}
	var cs []net.Conn
	for range conns {
		c, err := net.Dial("tcp", strings.TrimSpace(addr))
		if err != nil {
			return result{}, err
		}
		defer c.Close()
		cs = append(cs, c)
	}
	drive(cs, 300*time.Millisecond) // warm-up
	before := threads(cmd.Process.Pid)
	msgs := drive(cs, d)
	after := threads(cmd.Process.Pid)
	r := result{msgs: msgs}
	for tid, a := range after {
		b := before[tid]
		r.ctxsw += a.ctxsw - b.ctxsw
		r.cpuNs += a.cpuNs - b.cpuNs
	}
	if tids := slices.Sorted(maps.Keys(after)); len(tids) > 1 {
		r.sysmon = after[tids[1]].ctxsw - before[tids[1]].ctxsw
	}
	return r, nil
}

// drive runs every connection closed-loop (write a byte, read it back) for
// d and returns the round trips made.
func drive(cs []net.Conn, d time.Duration) uint64 {
	var n atomic.Uint64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for _, c := range cs {
		wg.Go(func() {
			buf := []byte{'x'}
			for time.Now().Before(end) {
				if _, err := c.Write(buf); err != nil {
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return n.Load()
}

type counts struct{ ctxsw, cpuNs uint64 }

// threads reads each thread's context switches and CPU time from /proc.
func threads(pid int) map[int]counts {
	out := map[int]counts{}
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, dir := range dirs {
		tid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		var c counts
		if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				k, v, _ := strings.Cut(line, ":")
				if k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches" {
					x, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
					c.ctxsw += x
				}
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, "schedstat")); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				c.cpuNs, _ = strconv.ParseUint(f[0], 10, 64)
			}
		}
		out[tid] = c
	}
	return out
}
