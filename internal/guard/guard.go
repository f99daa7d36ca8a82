// Package guard holds a worker's health policies beyond the heartbeat:
// stuck requests (Options.StuckTimeout) and sustained memory
// (Options.MemoryLimit). The policies are pure: they are fed observations
// with their times, so that tests drive them with a fake clock.
package guard

import "time"

// Stuck is the stuck-worker policy. A worker is stuck when it has a
// request in flight and has made no progress for Timeout. Progress is any
// of: a request completed, a handler wrote or flushed part of a response,
// a connection was hijacked (a websocket; its request no longer counts as
// in flight), or nothing was in flight. So a streaming response that
// writes, or a websocket, is not stuck; a handler that blocks without
// writing for Timeout while no other request completes is.
type Stuck struct {
	Timeout time.Duration

	progress int64     // the progress count last observed
	since    time.Time // when progress was last made
}

// Observe records that at now the worker has inFlight requests in flight
// and a progress count of progress (which only grows); it returns how long
// the worker has been stuck, and true if that is at least Timeout.
func (s *Stuck) Observe(now time.Time, inFlight, progress int64) (time.Duration, bool) {
	if s.since.IsZero() || inFlight <= 0 || progress != s.progress {
		s.progress, s.since = progress, now
		return 0, false
	}
	d := now.Sub(s.since)
	return d, d >= s.Timeout
}

// MemorySustain is how long a worker's RSS must stay above its
// MemoryLimit before it is recycled. With GOMEMLIMIT at the limit, the
// garbage collector runs ever harder as the heap nears it, and freed
// memory returns to the system within a few seconds; a spike (one big
// request) falls back well within this. RSS still above the limit after
// it is memory the worker holds: a leak, or a limit set too low.
const MemorySustain = 5 * time.Second

// Memory is the memory policy: a worker whose resident set stays above
// Limit for Sustain (at every observation, at least three of them) is to
// be recycled.
type Memory struct {
	Limit   int64
	Sustain time.Duration

	over    time.Time // when RSS was first seen above Limit in this run; zero if not above
	samples int       // observations above Limit in this run
}

// Observe records the worker's resident set at now; it returns how long it
// has been above Limit, and true once that is sustained.
func (m *Memory) Observe(now time.Time, rss int64) (time.Duration, bool) {
	if rss <= m.Limit {
		m.over, m.samples = time.Time{}, 0
		return 0, false
	}
	if m.over.IsZero() {
		m.over = now
	}
	m.samples++
	d := now.Sub(m.over)
	return d, d >= m.Sustain && m.samples >= 3
}
