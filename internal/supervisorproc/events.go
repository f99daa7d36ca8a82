//go:build unix

package supervisorproc

import (
	"sync"
	"time"

	"github.com/clusterflock/clusterflock/control"
	"github.com/clusterflock/clusterflock/supervisor"
)

// eventBus passes the supervisor's events to the control connections that
// wait on them (an action's outcome, the events stream), without ever
// blocking the supervisor: a subscriber that falls 1,024 events behind is
// cut off (its channel closed). It also remembers the last reload or
// upgrade and its result, for the status.
type eventBus struct {
	mu     sync.Mutex
	subs   map[chan control.Event]bool
	last   string
	lastAt time.Time
}

func newEventBus() *eventBus { return &eventBus{subs: make(map[chan control.Event]bool)} }

// publish is called on the supervisor's goroutine for every event.
func (b *eventBus) publish(ev supervisor.Event) {
	e := wireEvent(ev)
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case ev.Kind == supervisor.EventRestart && ev.Reason != "begin":
		b.last, b.lastAt = "reload "+ev.Reason, e.Time
	case ev.Kind == supervisor.EventUpgrade && ev.Reason != "begin":
		b.last, b.lastAt = "upgrade "+ev.Reason, e.Time
	}
	for c := range b.subs {
		select {
		case c <- e:
		default:
			delete(b.subs, c)
			close(c)
		}
	}
}

// subscribe returns a channel of the events from now on, and a function
// that ends the subscription.
func (b *eventBus) subscribe() (<-chan control.Event, func()) {
	c := make(chan control.Event, 1024)
	b.mu.Lock()
	b.subs[c] = true
	b.mu.Unlock()
	return c, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.subs[c] {
			delete(b.subs, c)
			close(c)
		}
	}
}

func (b *eventBus) lastReload() (string, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last, b.lastAt
}

// wireEvent is ev as the control protocol sends it.
func wireEvent(ev supervisor.Event) control.Event {
	e := control.Event{Kind: string(ev.Kind), Worker: ev.Worker.ID, Slot: ev.Worker.Slot, Generation: ev.Worker.Generation,
		PID: ev.Worker.Pid, Delay: ev.Delay, Reason: ev.Reason, Pool: ev.Pool, NewPID: ev.Pid, Time: time.Now()}
	if ev.Kind == supervisor.EventExit {
		e.Exit, e.Stderr = ev.Exit.String(), ev.Exit.Stderr
	}
	return e
}
