package metrics

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// A binary upgrade's old supervisor keeps serving /metrics until it has
// stopped its workers; then, over the channel the upgrade set up, it sends
// its totals (two snapshot frames: the workers', then the pool's counters)
// and its metrics listener (one byte with SCM_RIGHTS), and stops serving.
// The new supervisor serves from then on, its workers' counts added to
// those totals, so no counter goes backwards across the upgrade. If the
// old supervisor dies without handing over, the new one listens on Addr
// itself once it can (its counters then start again: a counter reset).

// handoverWrite bounds the old supervisor's sends: a new supervisor that
// does not read them (one without metrics) must not hold its exit.
const handoverWrite = 5 * time.Second

// HandOver implements plug.Supervisor.
func (h *hub) HandOver(ch *os.File) error {
	defer h.Close()
	conn, err := net.FileConn(ch)
	ch.Close()
	if err != nil {
		return fmt.Errorf("metrics hand-over: %w", err)
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return errors.New("metrics hand-over: not a unix socket")
	}
	h.settle(time.Second)
	workers, pool, ln := h.totals()
	uc.SetWriteDeadline(time.Now().Add(handoverWrite))
	for _, s := range []set{workers, pool} {
		body, err := encodeFamilies(s.families())
		if err == nil {
			err = writeFrame(uc, frameSnapshot, body)
		}
		if err != nil {
			return fmt.Errorf("metrics hand-over: %w", err)
		}
	}
	if ln == nil {
		return nil
	}
	f, err := ln.File()
	if err != nil {
		return fmt.Errorf("metrics hand-over: the listener: %w", err)
	}
	defer f.Close()
	if err := sendFile(uc, f); err != nil {
		return fmt.Errorf("metrics hand-over: the listener: %w", err)
	}
	return nil
}

// settle waits, at most limit, for the members' channels to end: their
// workers have exited, and their last frames are being read.
func (h *hub) settle(limit time.Duration) {
	h.mu.Lock()
	if len(h.members) == 0 {
		h.mu.Unlock()
		return
	}
	if h.empty == nil {
		h.empty = make(chan struct{})
	}
	empty := h.empty
	h.mu.Unlock()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-empty:
	case <-t.C:
	}
}

// totals returns what a new supervisor inherits: every worker's totals,
// the pool's counters (not the supervisor process's own), and the
// listener.
func (h *hub) totals() (workers, pool set, ln *net.TCPListener) {
	mfs, _ := h.poolFamilies()
	own, _ := newSet(mfs)
	pool = set{}
	for name, f := range own {
		if !strings.HasPrefix(name, "clusterflock_supervisor_") {
			pool.keep(set{name: f})
		}
	}
	merged, _ := h.merged() // the kept totals and the live workers', within MaxSeries
	workers = set{}
	workers.keep(merged)
	h.mu.Lock()
	defer h.mu.Unlock()
	ln = h.ln
	return workers, pool, ln
}

// inherit takes the old supervisor's hand-over, then serves.
func (h *hub) inherit(ch *os.File, addr string) {
	conn, err := net.FileConn(ch)
	ch.Close()
	var ln net.Listener
	if err == nil {
		ln, err = h.receive(conn)
	}
	if err != nil {
		h.log.Warn("metrics: no hand-over from the old supervisor; counters start again", "err", err.Error())
		ln = h.listenAgain(addr)
	}
	if ln != nil {
		h.serve(ln)
	}
}

// receive reads the totals and the listener from the old supervisor.
func (h *hub) receive(conn net.Conn) (net.Listener, error) {
	defer conn.Close()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errors.New("closed")
	}
	h.handover = conn
	h.mu.Unlock()
	var got [2]set
	for i := range got {
		_, body, err := readFrame(conn)
		if err == nil {
			got[i], _, err = decodeSnapshot(body, h.admit.limit)
		}
		if err != nil {
			return nil, fmt.Errorf("the totals: %w", err)
		}
	}
	h.mu.Lock()
	h.fold(got[0])
	h.carried.keep(got[1])
	h.mu.Unlock()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a unix socket")
	}
	f, err := receiveFile(uc)
	if err != nil {
		return nil, fmt.Errorf("the listener: %w", err)
	}
	defer f.Close()
	return net.FileListener(f)
}

// listenAgain listens on addr, trying for a few seconds while the old
// supervisor may still hold it; nil (logged) if it cannot, or on Close.
func (h *hub) listenAgain(addr string) net.Listener {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		select {
		case <-h.stop:
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	h.log.Error("metrics: cannot serve /metrics", "addr", addr, "err", err.Error())
	return nil
}
