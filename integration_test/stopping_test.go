//go:build linux

package integration_test

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

// TestDrainDelay: a graceful stop with DrainDelay keeps the pool accepting
// and serving for the delay, with Draining true and Connection: close, then
// stops cleanly.
func TestDrainDelay(t *testing.T) {
	const delay = 1500 * time.Millisecond
	p := startPool(t, poolConfig{workers: 2, env: []string{envDrain + "=" + delay.String()}})
	if got, err := p.get("/draining"); err != nil || !strings.HasPrefix(got, "false ") {
		t.Fatalf("Draining before the stop: %q, %v", got, err)
	}
	l := startLoad(t, p.addr)
	mark := p.mark()
	began := time.Now()
	p.signal(syscall.SIGTERM)
	p.waitEvent(mark, supervisor.EventLameDuck, nil)
	served := l.successes()
	// Every worker is told (a signal each: poll until both answer true;
	// a worker that did must not answer false again).
	told := map[string]bool{}
	for deadline := time.Now().Add(delay / 2); len(told) < 2 && time.Now().Before(deadline); {
		body, closed := getDraining(t, p)
		f := strings.Fields(body)
		if len(f) != 2 {
			t.Fatalf("GET /draining answered %q", body)
		}
		switch {
		case f[0] == "true" && !closed:
			t.Errorf("worker %s: a response while Draining without Connection: close", f[1])
		case f[0] == "true":
			told[f[1]] = true
		case told[f[1]]:
			t.Errorf("worker %s answered Draining false after true", f[1])
		}
	}
	if len(told) != 2 {
		t.Errorf("%d workers answered Draining true within %v of the lame-duck event, want both", len(told), delay/2)
	}
	// New connections succeed through the delay (stop the load just
	// before it ends: at the stop itself, as without a delay, connections
	// still arriving when the last listener closes are refused or reset;
	// the delay is for load balancers to stop sending them first).
	time.Sleep(time.Until(began.Add(delay - 300*time.Millisecond))) // the load runs meanwhile
	l.stop()
	if r := l.finish("load through the lame-duck period"); r.failed != 0 {
		t.Errorf("requests failed during the lame-duck period: %v", r)
	}
	stopping := p.waitEvent(mark, supervisor.EventStopping, nil)
	waited := time.Since(began)
	if l.successes()-served < 50 {
		t.Errorf("only %d requests served during the lame-duck period", l.successes()-served)
	}
	if waited < delay {
		t.Errorf("the stop began %v after TERM, want ≥ DrainDelay %v", waited, delay)
	}
	if !strings.HasPrefix(stopping.Reason, "graceful") {
		t.Errorf("stop %q, want graceful", stopping.Reason)
	}
	if code, runErr := p.wait(10 * time.Second); code != 0 || runErr != "" {
		t.Errorf("after the lame-duck stop: exit %d, Run error %q", code, runErr)
	}
}

// TestInterruptThroughContext: with signal.NotifyContext(ctx,
// os.Interrupt, SIGTERM), the usual Go idiom, Ctrl-C (SIGINT to the whole
// process group) is one graceful stop: the request in flight finishes,
// no worker stops on its own, Run returns nil.
func TestInterruptThroughContext(t *testing.T) {
	p := startPool(t, poolConfig{workers: 2, shutdown: 5 * time.Second, env: []string{envNotifyContext + "=1"}})
	slow := p.slowRequest(800)
	mark := p.mark()
	if err := syscall.Kill(-p.pid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := <-slow; err != nil {
		t.Errorf("the request in flight at Ctrl-C: %v", err)
	}
	if code, runErr := p.wait(10 * time.Second); code != 0 || runErr != "" {
		t.Errorf("after Ctrl-C: exit %d, Run error %q", code, runErr)
	}
	var reasons []string
	for _, e := range p.events(mark, supervisor.EventStopping) {
		reasons = append(reasons, e.Reason)
	}
	if len(reasons) != 1 || !strings.HasPrefix(reasons[0], "graceful") {
		t.Errorf("stops %q, want one graceful stop", reasons)
	}
	for _, e := range p.events(mark, supervisor.EventExit) {
		if !e.clean() {
			t.Errorf("worker %d: %s (%q), want a clean exit on the supervisor's request", e.Worker.Pid, e.Status, e.Reason)
		}
	}
	for _, e := range p.events(mark, supervisor.EventKill) {
		t.Errorf("worker %d killed: %s", e.Worker.Pid, e.Reason)
	}
}

// getDraining GETs /draining on a new connection: the body, and whether
// the response said Connection: close.
func getDraining(t *testing.T, p *pool) (string, bool) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.addr + "/draining")
	if err != nil {
		t.Fatalf("GET /draining: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /draining: %v", err)
	}
	return string(b), resp.Close
}
