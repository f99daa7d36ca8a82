//go:build linux

package integration_test

// Helpers of the reliability proofs (chaos_test.go, storm_test.go,
// longlife_test.go, hostile_test.go): a mixed closed-loop load that records
// every attempt with its times, the supervisor's /proc figures, signals sent
// one at a time (each after the supervisor logged the previous one's
// receipt) and the ledger that accounts for every signal as acted on or
// refused, from the pool's events.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

// attempt is one request of a traffic client.
type attempt struct {
	start, end time.Time
	keepAlive  bool   // sent by a keep-alive client
	reused     bool   // sent on a keep-alive connection that had answered before
	connPid    int    // for a reused connection: the worker that answered on it before
	pid        int    // the worker that answered, 0 if it failed
	failure    string // "" if answered (200 and a pid)
	// retry: the attempt failed on a reused keep-alive connection that the
	// server closed (EOF, reset, broken pipe) before any byte of an answer,
	// and was sent again on a fresh connection (the next attempt of the same
	// client). HTTP/1.1 clients do this (RFC 9112 §9.3.1; Go's Transport
	// does): a server may close an idle connection while a request is on
	// its way. Not a lost request unless the retry fails too.
	retry bool
}

// lost reports whether a is a request that failed for good.
func (a attempt) lost() bool { return a.failure != "" && !a.retry }

// traffic is a bounded closed-loop load of both kinds at once: clients that
// open a new connection per request ("Connection: close") and clients that
// keep one connection alive for as long as the server does.
type traffic struct {
	t        *testing.T
	addr     string
	start    time.Time
	quit     chan struct{}
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex
	attempts []attempt
}

const (
	trafficPerClient = 1_000_000 // attempts per client at most (the time bound comes first)
	keepAliveRequest = "GET / HTTP/1.1\r\nHost: clusterflock\r\n\r\n"
)

// startTraffic starts closeClients + keepClients clients against addr; they
// stop when asked, after bound, or when the test ends.
func startTraffic(t *testing.T, addr string, closeClients, keepClients int, bound time.Duration) *traffic {
	tr := &traffic{t: t, addr: addr, start: time.Now(), quit: make(chan struct{}), done: make(chan struct{})}
	timer := time.AfterFunc(bound, tr.stop)
	var wg sync.WaitGroup
	for range closeClients {
		wg.Go(tr.closeClient)
	}
	for range keepClients {
		wg.Go(tr.keepClient)
	}
	go func() {
		wg.Wait()
		timer.Stop()
		close(tr.done)
	}()
	t.Cleanup(func() { tr.stop(); <-tr.done })
	return tr
}

func (tr *traffic) stop() { tr.once.Do(func() { close(tr.quit) }) }

// halt stops the clients and waits until they have returned (each within
// loadDeadline).
func (tr *traffic) halt() {
	tr.stop()
	<-tr.done
}

func (tr *traffic) stopped() bool {
	select {
	case <-tr.quit:
		return true
	default:
		return false
	}
}

func (tr *traffic) record(a attempt) {
	tr.mu.Lock()
	tr.attempts = append(tr.attempts, a)
	tr.mu.Unlock()
}

func (tr *traffic) closeClient() {
	d := &net.Dialer{Timeout: loadDeadline}
	for range trafficPerClient {
		if tr.stopped() {
			return
		}
		a := attempt{start: time.Now()}
		a.pid, a.failure = request(d, tr.addr)
		a.end = time.Now()
		tr.record(a)
	}
}

func (tr *traffic) keepClient() {
	d := &net.Dialer{Timeout: loadDeadline}
	var c net.Conn
	var br *bufio.Reader
	connPid := 0
	drop := func() {
		if c != nil {
			c.Close()
		}
		c, br, connPid = nil, nil, 0
	}
	defer drop()
	for range trafficPerClient {
		if tr.stopped() {
			return
		}
		a := attempt{start: time.Now(), keepAlive: true, reused: c != nil, connPid: connPid}
		a.pid, a.failure, a.retry = tr.keepAliveRequest(d, &c, &br)
		a.end = time.Now()
		tr.record(a)
		if a.failure != "" {
			drop()
			continue
		}
		if c == nil { // the server said Connection: close
			connPid = 0
		} else {
			connPid = a.pid
		}
	}
}

// keepAliveRequest sends one request on *c (dialling it first if nil) and
// reads the answer; it leaves *c nil if the server closes the connection.
func (tr *traffic) keepAliveRequest(d *net.Dialer, c *net.Conn, br **bufio.Reader) (pid int, failure string, retry bool) {
	reused := *c != nil
	if !reused {
		conn, err := d.Dial("tcp", tr.addr)
		if err != nil {
			return 0, "dial: " + errKind(err), false
		}
		*c, *br = conn, bufio.NewReader(conn)
	}
	conn := *c
	conn.SetDeadline(time.Now().Add(loadDeadline))
	// closedUnanswered: the server closed the connection before any byte of
	// an answer; retried if the connection had served before.
	closedUnanswered := func(stage string, err error) (int, string, bool) {
		k := errKind(err)
		return 0, stage + ": " + k, reused && (k == "EOF" || k == "ECONNRESET" || k == "EPIPE")
	}
	if _, err := io.WriteString(conn, keepAliveRequest); err != nil {
		return closedUnanswered("write", err)
	}
	if _, err := (*br).Peek(1); err != nil {
		return closedUnanswered("read, no byte of an answer", err)
	}
	resp, err := http.ReadResponse(*br, nil)
	if err != nil {
		return 0, "read header: " + errKind(err), false
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, "read body: " + errKind(err), false
	}
	if resp.StatusCode != http.StatusOK {
		return 0, "status " + resp.Status, false
	}
	if resp.Close {
		conn.Close()
		*c, *br = nil, nil
	}
	pid, err = strconv.Atoi(string(body))
	if err != nil {
		return 0, fmt.Sprintf("bad body %q", body), false
	}
	return pid, "", false
}

// snapshot returns the attempts so far.
func (tr *traffic) snapshot() []attempt {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.attempts)
}

func (tr *traffic) answered() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, a := range tr.attempts {
		if a.failure == "" {
			n++
		}
	}
	return n
}

// waitAnswered waits (bounded) until n requests have been answered in all.
func (tr *traffic) waitAnswered(n int, timeout time.Duration) {
	tr.t.Helper()
	deadline := time.Now().Add(timeout)
	for tr.answered() < n {
		if time.Now().After(deadline) || tr.stopped() {
			tr.t.Fatalf("%d of %d requests answered after %v: %s", tr.answered(), n, time.Since(tr.start).Round(time.Millisecond), tally(tr.snapshot()))
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// trafficTally counts attempts.
type trafficTally struct {
	total, ok, lost, retried  int
	closeOK, keepOK, reusedOK int
	lostBy, retriedBy         map[string]int
}

func tally(as []attempt) trafficTally {
	r := trafficTally{lostBy: map[string]int{}, retriedBy: map[string]int{}}
	for _, a := range as {
		r.total++
		switch {
		case a.failure == "":
			r.ok++
			if a.keepAlive {
				r.keepOK++
				if a.reused {
					r.reusedOK++
				}
			} else {
				r.closeOK++
			}
		case a.retry:
			r.retried++
			r.retriedBy[a.failure]++
		default:
			r.lost++
			kind := "close"
			if a.keepAlive {
				kind = "keep-alive"
			}
			r.lostBy[kind+", "+a.failure]++
		}
	}
	return r
}

func (r trafficTally) String() string {
	s := fmt.Sprintf("%d attempts: %d answered (%d Connection: close, %d keep-alive of which %d on a reused connection), %d lost, %d retried",
		r.total, r.ok, r.closeOK, r.keepOK, r.reusedOK, r.lost, r.retried)
	if r.lost > 0 {
		s += "; lost by cause: " + countsString(r.lostBy)
	}
	if r.retried > 0 {
		s += "; retried (keep-alive connection closed before an answer) by cause: " + countsString(r.retriedBy)
	}
	return s
}

func countsString(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// timedEvent is an event with the time its record was logged.
type timedEvent struct {
	event
	at    time.Time
	index int // of its record
}

// timedEvents returns every event from record index from, with its time.
func (p *pool) timedEvents(from int) []timedEvent {
	all := logOf(p).events()
	i, _ := slices.BinarySearchFunc(all, from, func(e timedEvent, from int) int { return e.index - from })
	return all[i:]
}

// eventLog parses a pool's events once each, outside the pool's lock: the
// tests that read the events over and over (thousands of records) must not
// hold up the reading of the pool's stderr, or the supervisor would block
// writing its log.
type eventLog struct {
	p    *pool
	mu   sync.Mutex
	next int // records parsed so far
	evs  []timedEvent
}

var (
	eventLogsMu sync.Mutex
	eventLogs   = map[*pool]*eventLog{}
)

func logOf(p *pool) *eventLog {
	eventLogsMu.Lock()
	defer eventLogsMu.Unlock()
	l := eventLogs[p]
	if l == nil {
		l = &eventLog{}
		eventLogs[p] = l
		p.t.Cleanup(func() {
			eventLogsMu.Lock()
			delete(eventLogs, p)
			eventLogsMu.Unlock()
		})
	}
	l.p = p
	return l
}

// events returns every event so far, in order (the slice is shared: read
// only).
func (l *eventLog) events() []timedEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.mu.Lock()
	recs := l.p.records[l.next:len(l.p.records):len(l.p.records)] // appended to, never changed
	l.p.mu.Unlock()
	for i, r := range recs {
		if r.str("msg") != eventMsg {
			continue
		}
		at, _ := time.Parse(time.RFC3339Nano, r.str("time"))
		l.evs = append(l.evs, timedEvent{event: r.event(), at: at, index: l.next + i})
	}
	l.next += len(recs)
	return l.evs[:len(l.evs):len(l.evs)]
}

// plainEvents returns the events so far without their times.
func (p *pool) plainEvents() []event {
	all := logOf(p).events()
	out := make([]event, len(all))
	for i, e := range all {
		out[i] = e.event
	}
	return out
}

// countRecords counts the records from index from that match ok.
func (p *pool) countRecords(from int, ok func(record) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.records[from:] {
		if ok(r) {
			n++
		}
	}
	return n
}

// waitRecords waits until n records from index from match ok.
func (p *pool) waitRecords(from, n int, ok func(record) bool, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i, got := from, 0; ; {
		p.mu.Lock()
		for ; i < len(p.records); i++ {
			if ok(p.records[i]) {
				got++
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-p.logDone:
			return fmt.Errorf("%d of %d records: the pool's process group exited", got, n)
		case <-deadline.C:
			return fmt.Errorf("%d of %d records after %v", got, n, timeout)
		}
	}
}

// signalName is the spelling of the supervisor's logs and events ("TTIN").
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTTIN:
		return "TTIN"
	case syscall.SIGTTOU:
		return "TTOU"
	case syscall.SIGHUP:
		return "HUP"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGUSR1:
		return "USR1"
	}
	return sig.String()
}

// signaller sends signals to a pool's supervisor one at a time: each only
// once the supervisor has logged the receipt of the previous one, since the
// kernel merges a standard signal sent again before the first is delivered.
type signaller struct {
	p        *pool
	sent     map[string]int
	from     int // record index the counts start at
	barriers int // USR1 sent by barrier
}

func newSignaller(p *pool) *signaller {
	return &signaller{p: p, sent: map[string]int{}, from: p.mark()}
}

func isReceipt(name string) func(record) bool {
	return func(r record) bool { return r.str("msg") == "signal received" && r.str("signal") == name }
}

// send sends sig and waits (bounded) for the supervisor's "signal received"
// record of it.
func (s *signaller) send(sig syscall.Signal) {
	s.p.t.Helper()
	name := signalName(sig)
	s.p.signal(sig)
	s.sent[name]++
	if err := s.p.waitRecords(s.from, s.sent[name], isReceipt(name), 10*time.Second); err != nil {
		s.p.t.Fatalf("kill -%s %d (%d sent): the supervisor did not log its receipt: %v", name, s.p.pid(), s.sent[name], err)
	}
}

// barrier waits until the supervisor has logged everything it did for the
// signals sent so far: USR1 makes its dispatcher, once it has handled them,
// ask the supervisor's loop for the worker table, which the loop answers
// after it has emitted the events of the commands before. Not counted in
// sent.
func (s *signaller) barrier() {
	s.p.t.Helper()
	s.barriers++
	s.p.signal(syscall.SIGUSR1)
	isTable := func(r record) bool { return r.str("msg") == "worker table" }
	if err := s.p.waitRecords(s.from, s.barriers, isTable, 10*time.Second); err != nil {
		s.p.t.Fatalf("kill -USR1 %d: no worker table: %v", s.p.pid(), err)
	}
}

// received returns the supervisor's receipts by signal name.
func (s *signaller) received() map[string]int {
	out := map[string]int{}
	for name := range s.sent {
		out[name] = s.p.countRecords(s.from, isReceipt(name))
	}
	return out
}

// ledger accounts for the scaling and restart signals a pool received: each
// is acted on (an event shows it) or refused (an EventRefused names it).
type ledger struct {
	acted, refused map[string]int
	reasons        map[string]int // refusals by reason
	unknown        []string       // refusals naming no signal of these
	slots          map[int]bool   // the pool's slots, as the events tell
	retired        map[int]bool   // worker IDs retired by TTOU
	reforks        int            // EventRefork
	unexpected     int            // exits the supervisor had not asked for
}

// failedStarts is the number of forks that failed: a refork follows each
// unexpected exit and each fork that fails.
func (l ledger) failedStarts() int { return l.reforks - l.unexpected }

// target is the pool size the signals ask for: initial, plus each TTIN and
// minus each TTOU that was not refused.
func (l ledger) target(initial int, received map[string]int) int {
	return initial + received["TTIN"] - l.refused["TTIN"] - received["TTOU"] + l.refused["TTOU"]
}

// refusedSignal maps a refusal's reason to the signal it refuses: the
// dispatcher's start with the signal ("TTOU: …"), the supervisor's with the
// request ("retire worker: …").
func refusedSignal(reason string) string {
	for _, m := range []struct{ prefix, sig string }{
		{"TTIN: ", "TTIN"}, {"add worker: ", "TTIN"},
		{"TTOU: ", "TTOU"}, {"retire worker: ", "TTOU"},
		{"HUP: ", "HUP"}, {"rolling restart: ", "HUP"},
	} {
		if strings.HasPrefix(reason, m.prefix) {
			return m.sig
		}
	}
	return ""
}

// account replays the pool's events from its start (initial workers in
// slots 0…initial-1): a spawn in a slot not in the pool is a TTIN acted on,
// a worker's drain or stop "retired" a TTOU, a rolling restart's "begin" a
// HUP.
func account(p *pool, initial int) ledger {
	l := ledger{acted: map[string]int{}, refused: map[string]int{}, reasons: map[string]int{}, slots: map[int]bool{}, retired: map[int]bool{}}
	for i := range initial {
		l.slots[i] = true
	}
	for _, e := range p.plainEvents() {
		switch e.Kind {
		case supervisor.EventSpawn, supervisor.EventRefork:
			// A refork in a new slot: the TTIN's fork failed, the slot
			// is in the pool and waits for its refork.
			if !l.slots[e.Worker.Slot] {
				l.slots[e.Worker.Slot] = true
				l.acted["TTIN"]++
			}
			if e.Kind == supervisor.EventRefork {
				l.reforks++
			}
		case supervisor.EventDrain, supervisor.EventStop:
			if e.Reason == "retired" && !l.retired[e.Worker.ID] {
				l.retired[e.Worker.ID] = true
				delete(l.slots, e.Worker.Slot)
				l.acted["TTOU"]++
			}
		case supervisor.EventRestart:
			if e.Reason == "begin" {
				l.acted["HUP"]++
			}
		case supervisor.EventExit:
			if e.unexpected() {
				l.unexpected++
			}
		case supervisor.EventRefused:
			sig := refusedSignal(e.Reason)
			if sig == "" {
				l.unknown = append(l.unknown, e.Reason)
				continue
			}
			l.refused[sig]++
			l.reasons[e.Reason]++
		}
	}
	return l
}

// check fails the test unless every signal sent was received and is acted
// on or refused; it logs the figures under label.
func (l ledger) check(t *testing.T, label string, sent, received map[string]int) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(sent)) {
		t.Logf("%s: %s sent %d, received %d, acted on %d, refused %d", label, name, sent[name], received[name], l.acted[name], l.refused[name])
		if received[name] != sent[name] {
			t.Errorf("%s: %s sent %d times, the supervisor logged %d receipts", label, name, sent[name], received[name])
		}
		if l.acted[name]+l.refused[name] != received[name] {
			t.Errorf("%s: %s received %d times, but %d acted on (an event shows it) + %d refused = %d: %d unaccounted for",
				label, name, received[name], l.acted[name], l.refused[name], l.acted[name]+l.refused[name], received[name]-l.acted[name]-l.refused[name])
		}
	}
	if len(l.reasons) > 0 {
		t.Logf("%s: refusals by reason: %s", label, countsString(l.reasons))
	}
	for _, r := range l.unknown {
		t.Errorf("%s: a refusal that names no signal sent: %q", label, r)
	}
}

// workerStates returns the state of every worker the events show alive, by
// pid.
func workerStates(evs []event) map[int]supervisor.State {
	st := map[int]supervisor.State{}
	for _, e := range evs {
		pid := e.Worker.Pid
		switch e.Kind {
		case supervisor.EventSpawn:
			st[pid] = supervisor.Starting
		case supervisor.EventReady:
			st[pid] = supervisor.Ready
		case supervisor.EventDrain:
			st[pid] = supervisor.Draining
		case supervisor.EventStop:
			st[pid] = supervisor.Stopping
		case supervisor.EventKill:
			st[pid] = "killed"
		case supervisor.EventExit:
			delete(st, pid)
		}
	}
	return st
}

// converge waits until the supervisor's children are exactly the workers its
// events show alive, there are want of them and every one is ready. It
// returns their pids.
func (p *pool) converge(want int, timeout time.Duration) []int {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		kids := p.workerPids()
		st := workerStates(p.plainEvents())
		ok := len(kids) == want && len(st) == want
		for _, pid := range kids {
			if st[pid] != supervisor.Ready {
				ok = false
			}
		}
		if ok {
			slices.Sort(kids)
			return kids
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the pool did not converge to %d ready workers in %v: children %v, workers by the events %v", want, timeout, kids, st)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// fdCount returns the number of open descriptors of pid.
func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// fdTargets returns what each descriptor of pid is, by fd.
func fdTargets(pid int) map[string]string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	out := map[string]string{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			target = err.Error()
		}
		out[e.Name()] = target
	}
	return out
}

// fdDiff describes how the descriptors now differ from before.
func fdDiff(before, now map[string]string) string {
	var s []string
	for _, fd := range slices.Sorted(maps.Keys(now)) {
		if before[fd] != now[fd] {
			s = append(s, fmt.Sprintf("+%s→%s", fd, now[fd]))
		}
	}
	for _, fd := range slices.Sorted(maps.Keys(before)) {
		if _, ok := now[fd]; !ok {
			s = append(s, fmt.Sprintf("-%s→%s", fd, before[fd]))
		}
	}
	return strings.Join(s, " ")
}

// stableFDs waits (bounded) until pid's descriptor count is the same for 10
// readings in a row 20 ms apart, and returns it (a fork's pipes are
// transient).
func stableFDs(pid int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	last, same := -2, 0
	for time.Now().Before(deadline) {
		n := fdCount(pid)
		if n == last {
			same++
			if same >= 10 {
				return n
			}
		} else {
			last, same = n, 1
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
	return last
}

// waitFDs waits (bounded) until pid has exactly want descriptors; it returns
// the last count.
func waitFDs(pid, want int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		n := fdCount(pid)
		if n == want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// statusInt returns the leading number of key in /proc/pid/status (VmRSS in
// kB, Threads), or -1.
func statusInt(pid int, key string) int {
	f := strings.Fields(procStatus(pid, key))
	if len(f) == 0 {
		return -1
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return -1
	}
	return n
}

// procStat returns the state letter and process group of pid from
// /proc/pid/stat.
func procStat(pid int) (state byte, pgrp int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	// After the command: state ppid pgrp …
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return 0, 0, false
	}
	pgrp, _ = strconv.Atoi(f[2])
	return f[0][0], pgrp, true
}

// groupMembers returns the live processes of process group pgrp.
func groupMembers(pgrp int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, g, ok := procStat(pid); ok && g == pgrp {
			out = append(out, pid)
		}
	}
	return out
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// checkNoOrphans waits (bounded) until no process of the pool's process
// group is left after its supervisor exited, and until its stderr is closed
// (every process that had it is gone); leftovers are orphans.
func checkNoOrphans(t *testing.T, p *pool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := groupMembers(p.pid())
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var desc []string
			for _, pid := range left {
				desc = append(desc, fmt.Sprintf("%d (%s)", pid, cmdline(pid)))
			}
			t.Errorf("orphans: processes of the pool's group still alive %v after its supervisor exited: %s", timeout, strings.Join(desc, ", "))
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
	select {
	case <-p.logDone:
	case <-time.After(time.Until(deadline) + time.Second):
		t.Errorf("orphans: the pool's stderr is still open %v after its supervisor exited: some process outside its group holds it", timeout)
	}
}

// zombieWatch samples the supervisor's children while a test runs and
// remembers any that stays a zombie (exited, not reaped) longer than limit.
type zombieWatch struct {
	mu       sync.Mutex
	since    map[int]time.Time
	lingered map[int]time.Duration
	samples  int
	maxFDs   int
	maxThr   int
	longest  time.Duration // the longest a child stayed a zombie
	quit     chan struct{}
	done     chan struct{}
}

func watchZombies(sup int, limit time.Duration) *zombieWatch {
	z := &zombieWatch{since: map[int]time.Time{}, lingered: map[int]time.Duration{}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(z.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-z.quit:
				return
			case <-tick.C:
			}
			now := time.Now()
			z.mu.Lock()
			z.samples++
			z.maxFDs = max(z.maxFDs, fdCount(sup))
			z.maxThr = max(z.maxThr, statusInt(sup, "Threads"))
			seen := map[int]bool{}
			for _, pid := range childrenOf(sup) {
				if st, _, ok := procStat(pid); ok && st == 'Z' {
					seen[pid] = true
					if _, ok := z.since[pid]; !ok {
						z.since[pid] = now
					}
					d := now.Sub(z.since[pid])
					z.longest = max(z.longest, d)
					if d > limit {
						z.lingered[pid] = d
					}
				}
			}
			for pid := range z.since {
				if !seen[pid] {
					delete(z.since, pid)
				}
			}
			z.mu.Unlock()
		}
	}()
	return z
}

func (z *zombieWatch) stop() {
	select {
	case <-z.quit:
	default:
		close(z.quit)
	}
	<-z.done
}

// zombies returns the children that stayed zombies longer than the limit.
func (z *zombieWatch) zombies() map[int]time.Duration {
	z.mu.Lock()
	defer z.mu.Unlock()
	return maps.Clone(z.lingered)
}

// peaks returns the most descriptors and threads the supervisor had, and
// the longest a child stayed a zombie.
func (z *zombieWatch) peaks() (fds, threads, samples int, zombie time.Duration) {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.maxFDs, z.maxThr, z.samples, z.longest
}

// eventCounts counts events by kind (and reason for a few kinds).
func eventCounts(evs []event) string {
	m := map[string]int{}
	for _, e := range evs {
		k := string(e.Kind)
		switch e.Kind {
		case supervisor.EventStop, supervisor.EventRestart, supervisor.EventDrain:
			k += "(" + e.Reason + ")"
		case supervisor.EventKill:
			r := e.Reason
			if i := strings.Index(r, " for "); i > 0 {
				r = r[:i]
			}
			k += "(" + r + ")"
		case supervisor.EventExit:
			r := e.Reason
			if strings.HasPrefix(r, "killed: ") {
				r = "killed"
			}
			if r == "" {
				r = "asked, " + e.Status
			}
			k += "(" + r + ")"
		}
		m[k]++
	}
	return countsString(m)
}

// logWarnings logs the pool's records of level WARN and ERROR, counted by
// message and error (one example of each).
func logWarnings(t *testing.T, p *pool, label string) {
	t.Helper()
	p.mu.Lock()
	m := map[string]int{}
	for _, r := range p.records {
		if lv := r.str("level"); lv == "WARN" || lv == "ERROR" {
			k := lv + " " + r.str("msg")
			if e := r.str("err"); e != "" {
				k += ": " + e
			}
			if rs := r.str("reason"); rs != "" && r.str("event") == "" {
				k += " (" + rs + ")"
			}
			m[k]++
		}
	}
	p.mu.Unlock()
	if len(m) > 0 {
		t.Logf("%s: warnings and errors logged: %s", label, countsString(m))
	}
}

// saveLog writes every record of the pool, one JSON line each, to
// $CF_LOG_DIR/<test name>.jsonl when CF_LOG_DIR is set (for analysis of a
// run that passed, or a defect's reproduction).
func saveLog(t *testing.T, p *pool) {
	dir := os.Getenv("CF_LOG_DIR")
	if dir == "" {
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.jsonl", name, p.pid()))
	f, err := os.Create(path)
	if err != nil {
		t.Logf("CF_LOG_DIR: %v", err)
		return
	}
	defer f.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	w := bufio.NewWriter(f)
	for _, r := range p.records {
		b, _ := json.Marshal(r)
		w.Write(b)
		w.WriteByte('\n')
	}
	w.Flush()
	t.Logf("the pool's log is in %s", path)
}
