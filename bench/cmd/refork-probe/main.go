//go:build linux

// Command refork-probe breaks a re-fork down. It runs a pool of 2 (the probe
// is the supervisor), SIGKILLs a ready worker N times and prints the median
// and p90 of each phase, on CLOCK_MONOTONIC:
//
//	kill → victim gone        the victim's pidfd is readable: every thread has
//	                          exited and the kernel has torn it down
//	→ fork                    the kernel's fork event of the replacement (proc
//	                          connector): the supervisor's reaping and its
//	                          preparation of the re-fork
//	→ exec done               its execve completed (os/exec's child side + execve)
//	→ worker's main           dynamic loader, Go runtime start, package init
//	→ accepting               the library's start-up in the worker, up to Serve
//	→ supervisor sees ready   the ready handshake
//
// and the totals kill → accepting (from then on the new socket takes and
// answers connections) and kill → ready, and apart when the supervisor
// reported the exit (EventExit, logged) after the victim was gone. With
// -spare the replacement is the standby, forked and started before the
// kill: those phases are left out (kill → victim gone → accepting → ready). With -init it also runs its own
// binary with GODEBUG=inittrace=1 to split the Go start into runtime start
// and package init. The kernel's events need root (CAP_NET_ADMIN); without
// them those phases are left out.
//
//	go run ./cmd/refork-probe -n 50
//
// To compare two builds under the same conditions, run them in turns with
// -raw FILE each and pool the lines: -pool FILE prints the medians and p90
// of what a raw file holds.
//
//	go run ./cmd/refork-probe -pool FILE
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock"
	"github.com/clusterflock/clusterflock/supervisor"
	"golang.org/x/sys/unix"
)

const (
	envFile = "REFORK_PROBE_FILE" // where workers write their stamps
	envInit = "REFORK_PROBE_INIT" // set: exit at once in main (the -init runs)
)

func main() {
	mainAt := now()
	if os.Getenv(envInit) != "" {
		return
	}
	n := flag.Int("n", 50, "re-forks to measure")
	spare := flag.Bool("spare", false, "Options.Spare")
	initRuns := flag.Int("init", 20, "runs of this binary with GODEBUG=inittrace=1 to split the Go start (0: none)")
	raw := flag.String("raw", "", "also append each re-fork's phases to this file, a line each: phase<TAB>ns (to pool interleaved runs)")
	pool := flag.String("pool", "", "print the phases a -raw file holds, and exit")
	flag.Parse()
	if *pool != "" {
		os.Exit(printRaw(*pool))
	}
	worker := clusterflock.IsWorker() // asked once: Run removes the marker
	if worker {
		stamp("main", mainAt)
	} else {
		f, err := os.CreateTemp("", "refork-probe-*")
		if err != nil {
			panic(err)
		}
		f.Close()
		os.Setenv(envFile, f.Name())
		defer os.Remove(f.Name())
	}
	p := &probe{ev: make(chan event, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- clusterflock.Run(ctx, http.NotFoundHandler(), p.options(*spare)) }()
	if worker {
		<-done
		return
	}
	r := p.run(*n)
	cancel()
	<-done
	r.print(os.Stdout)
	if *raw != "" {
		if err := r.appendRaw(*raw); err != nil {
			fmt.Fprintln(os.Stderr, "refork-probe:", err)
		}
	}
	if *initRuns > 0 {
		goStart(*initRuns).print(os.Stdout)
	}
}

// options are the pool's: 2 workers, whose Serve start is stamped.
func (p *probe) options(spare bool) clusterflock.Options {
	srv := &http.Server{BaseContext: func(net.Listener) context.Context {
		stamp("serve", now())
		return context.Background()
	}}
	return clusterflock.Options{Workers: 2, Addr: "127.0.0.1:0", Spare: spare, ControlSocket: "-", OnEvent: p.onEvent, Server: srv}
}

// run measures n re-forks, with the kernel's events if it may.
func (p *probe) run(n int) *report {
	pe, err := listenProcEvents()
	if err != nil {
		fmt.Fprintf(os.Stderr, "refork-probe: no kernel process events (%v): the fork and exec phases are left out\n", err)
	}
	p.proc = pe
	return p.measure(n)
}

// printRaw prints what a -raw file holds; it returns the exit status.
func printRaw(file string) int {
	r, err := readRaw(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "refork-probe:", err)
		return 1
	}
	r.print(os.Stdout)
	return 0
}

// now is CLOCK_MONOTONIC in ns: comparable across processes and with the
// kernel's event stamps.
func now() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// stamp appends "pid what ns" to the probe file (in a worker).
func stamp(what string, ns int64) {
	f, err := os.OpenFile(os.Getenv(envFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return
	}
	fmt.Fprintf(f, "%d %s %d\n", os.Getpid(), what, ns)
	f.Close()
}

// stamps returns what worker pid wrote to the probe file.
func stamps(pid int) map[string]int64 {
	m := map[string]int64{}
	f, err := os.Open(os.Getenv(envFile))
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 3 && fs[0] == strconv.Itoa(pid) {
			m[fs[1]], _ = strconv.ParseInt(fs[2], 10, 64)
		}
	}
	return m
}

type event struct {
	kind supervisor.EventKind
	pid  int
	at   int64
}

type probe struct {
	ev   chan event
	proc *procEvents // nil without the kernel's events
}

func (p *probe) onEvent(e supervisor.Event) {
	p.ev <- event{e.Kind, e.Worker.Pid, now()}
}

// measure kills a ready worker n times and returns each re-fork's phases.
func (p *probe) measure(n int) *report {
	var ready []int
	for len(ready) < 2 {
		if s := <-p.ev; s.kind == supervisor.EventReady {
			ready = append(ready, s.pid)
		}
	}
	r := newReport()
	for range n {
		victim := ready[0]
		gone := watchExit(victim)
		t0 := now()
		syscall.Kill(victim, syscall.SIGKILL)
		var exit, rdy int64
		newPid := 0
		for rdy == 0 {
			s := <-p.ev
			switch {
			case s.kind == supervisor.EventExit && s.pid == victim:
				exit = s.at
			case s.kind == supervisor.EventSpawn && exit != 0 && newPid == 0:
				newPid = s.pid
			case s.kind == supervisor.EventReady && s.pid == newPid:
				rdy = s.at
			}
		}
		ready = []int{ready[1], newPid}
		// Let the re-fork age past the young-death backoff; the worker
		// has written its stamps by then.
		time.Sleep(1100 * time.Millisecond)
		r.add(p.phases(t0, <-gone, exit, rdy, newPid))
	}
	return r
}

// phases lays one re-fork's stamps out in order (a stamp not seen is 0),
// and returns apart when the supervisor reported the exit (EventExit).
func (p *probe) phases(kill, gone, exit, ready int64, pid int) (order []int64, reported int64) {
	var fork, exec int64
	if p.proc != nil {
		t := p.proc.times(pid)
		if t.parent == os.Getpid() {
			fork, exec = t.fork, t.exec
		}
	}
	w := stamps(pid)
	return []int64{kill, gone, fork, exec, w["main"], w["serve"], ready}, exit
}

// watchExit returns when pid has exited (its pidfd is readable), or 0.
func watchExit(pid int) <-chan int64 {
	c := make(chan int64, 1)
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		c <- 0
		return c
	}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, 10_000)
			if err == unix.EINTR {
				continue
			}
			if n == 1 {
				c <- now()
			} else {
				c <- 0
			}
			return
		}
	}()
	return c
}
