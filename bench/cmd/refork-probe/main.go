// Command refork-probe breaks a re-fork down: SIGKILL of a ready worker →
// its exit reaped → the re-fork spawned → the new worker's main running →
// ready. It runs a pool of 2 (the probe is the supervisor), kills a worker
// N times, and prints the medians of each phase.
//
//	go run ./cmd/refork-probe -n 50
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterflock/clusterflock"
	"github.com/clusterflock/clusterflock/supervisor"
)

const envFile = "REFORK_PROBE_FILE"

func main() {
	mainAt := time.Now()
	n := flag.Int("n", 50, "re-forks to measure")
	spare := flag.Bool("spare", false, "Options.Spare")
	flag.Parse()
	if clusterflock.IsWorker() {
		f, err := os.OpenFile(os.Getenv(envFile), os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			fmt.Fprintf(f, "%d %d\n", os.Getpid(), mainAt.UnixNano())
			f.Close()
		}
	} else {
		f, err := os.CreateTemp("", "refork-probe-*")
		if err != nil {
			panic(err)
		}
		f.Close()
		os.Setenv(envFile, f.Name())
		defer os.Remove(f.Name())
	}
	p := &probe{ev: make(chan stamp, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	opts := clusterflock.Options{Workers: 2, Addr: "127.0.0.1:0", Spare: *spare, ControlSocket: "-", OnEvent: p.onEvent}
	done := make(chan error, 1)
	go func() { done <- clusterflock.Run(ctx, http.NotFoundHandler(), opts) }()
	if !clusterflock.IsWorker() {
		p.measure(*n)
		cancel()
	}
	<-done
}

type stamp struct {
	kind supervisor.EventKind
	pid  int
	at   time.Time
}

type probe struct {
	ev chan stamp
}

func (p *probe) onEvent(e supervisor.Event) {
	p.ev <- stamp{e.Kind, e.Worker.Pid, time.Now()}
}

// measure kills a ready worker n times and prints the phases' medians.
func (p *probe) measure(n int) {
	var ready []int
	for len(ready) < 2 {
		if s := <-p.ev; s.kind == supervisor.EventReady {
			ready = append(ready, s.pid)
		}
	}
	phases := map[string][]time.Duration{}
	for range n {
		victim := ready[0]
		t0 := time.Now()
		syscall.Kill(victim, syscall.SIGKILL)
		var exit, spawn, rdy time.Time
		var newPid int
		for rdy.IsZero() {
			s := <-p.ev
			switch {
			case s.kind == supervisor.EventExit && s.pid == victim:
				exit = s.at
			case s.kind == supervisor.EventSpawn && !exit.IsZero() && newPid == 0:
				spawn, newPid = s.at, s.pid
			case s.kind == supervisor.EventReady && s.pid == newPid:
				rdy = s.at
			}
		}
		mainAt := workerMain(newPid)
		ready = []int{ready[1], newPid}
		phases["1 kill → exit reaped"] = append(phases["1 kill → exit reaped"], exit.Sub(t0))
		phases["2 exit → re-fork spawned"] = append(phases["2 exit → re-fork spawned"], spawn.Sub(exit))
		if !mainAt.IsZero() {
			phases["3 spawned → worker's main"] = append(phases["3 spawned → worker's main"], mainAt.Sub(spawn))
			phases["4 worker's main → ready"] = append(phases["4 worker's main → ready"], rdy.Sub(mainAt))
		}
		phases["5 total: kill → ready"] = append(phases["5 total: kill → ready"], rdy.Sub(t0))
		time.Sleep(1100 * time.Millisecond) // let the re-fork age past the young-death backoff
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range phases {
			if !yield(k) {
				return
			}
		}
	}) {
		d := phases[k]
		slices.Sort(d)
		fmt.Printf("%-28s median %8.2f ms  p90 %8.2f ms  (n=%d)\n", k, ms(d[len(d)/2]), ms(d[len(d)*9/10]), len(d))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// workerMain reads when worker pid's main began, from the probe file.
func workerMain(pid int) time.Time {
	f, err := os.Open(os.Getenv(envFile))
	if err != nil {
		return time.Time{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 2 && fs[0] == strconv.Itoa(pid) {
			ns, _ := strconv.ParseInt(fs[1], 10, 64)
			return time.Unix(0, ns)
		}
	}
	return time.Time{}
}
