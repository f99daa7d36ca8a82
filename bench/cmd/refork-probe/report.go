//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// report collects each phase's durations over the re-forks.
type report struct {
	names []string
	d     map[string][]int64 // ns
}

func newReport() *report { return &report{d: map[string][]int64{}} }

func (r *report) put(name string, ns int64) {
	if !slices.Contains(r.names, name) {
		r.names = append(r.names, name)
	}
	r.d[name] = append(r.d[name], ns)
}

// add records one re-fork: each phase from the previous stamp seen after
// the kill, and the totals.
func (r *report) add(st []int64, reported int64) {
	// The stamps in order, as probe.phases lays them out.
	names := []string{"kill", "victim gone", "fork", "exec done", "worker's main", "accepting", "supervisor sees ready"}
	prev := 0
	for i := 1; i < len(st); i++ {
		if st[i] < st[0] {
			continue // not seen, or before the kill (Spare: the standby started then)
		}
		r.put(fmt.Sprintf("%-21s → %s", names[prev], names[i]), st[i]-st[prev])
		prev = i
	}
	if st[5] != 0 {
		r.put("total: kill → accepting", st[5]-st[0])
	}
	r.put("total: kill → ready", st[6]-st[0])
	if st[1] != 0 {
		r.put("victim gone → EventExit (logged)", reported-st[1])
	}
}

func (r *report) print(w io.Writer) {
	for _, k := range r.names {
		d := slices.Sorted(slices.Values(r.d[k]))
		fmt.Fprintf(w, "%-47s median %6.2f ms  p90 %6.2f ms  (n=%d)\n", k, ms(d[len(d)/2]), ms(d[len(d)*9/10]), len(d))
	}
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// appendRaw appends each duration to file, a line each: name<TAB>ns.
func (r *report) appendRaw(file string) error {
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, k := range r.names {
		for _, ns := range r.d[k] {
			fmt.Fprintf(w, "%s\t%d\n", k, ns)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readRaw reads what appendRaw wrote, maybe by several runs.
func readRaw(file string) (*report, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := newReport()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), "\t")
		ns, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s: not a phase<TAB>ns line: %q", file, sc.Text())
		}
		r.put(name, ns)
	}
	return r, sc.Err()
}

// goStart runs this binary n times with GODEBUG=inittrace=1, exiting at
// once in main, and reports the time its package inits take, from the
// trace: each line is "init pkg @t ms, c ms clock, …". (The trace's own
// writes stretch the span from the first init to the last, so only the
// sum of the clocks is used.)
func goStart(n int) *report {
	r := newReport()
	exe, err := os.Executable()
	if err != nil {
		return r
	}
	for range n {
		var stderr bytes.Buffer
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envInit+"=1", "GODEBUG=inittrace=1")
		cmd.Stderr = &stderr
		if cmd.Run() != nil {
			continue
		}
		var sum float64
		for _, line := range strings.Split(stderr.String(), "\n") {
			f := strings.Fields(line)
			if len(f) < 6 || f[0] != "init" {
				continue
			}
			c, _ := strconv.ParseFloat(f[4], 64)
			sum += c
		}
		r.put("Go start: package inits (sum)", int64(sum*1e6))
	}
	return r
}
