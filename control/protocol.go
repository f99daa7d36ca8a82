// Package control is the client of a clusterflock pool's control socket, and
// its protocol: a Go deploy tool uses it as cmd/flockctl does. Every action
// waits for its real outcome and says it: Scale returns when the pool has
// the size asked, Reload when every worker is new (or why the rolling restart
// aborted), Upgrade when the new supervisor serves (its PID), Stop when the
// pool has exited.
//
// The protocol is JSON lines over a Unix socket (owner-only, see
// [DefaultDir]): one [Request] per connection, then [Reply] lines, the last
// with Done set. Version is [Version]; a server answers a request of another
// version with an error.
package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Version is the protocol version this package speaks.
const Version = 1

// MaxLine bounds one request or reply line, newline included.
const MaxLine = 1 << 20

// Operations of a [Request].
const (
	OpStatus  = "status"  // the pool's state
	OpScale   = "scale"   // set the worker count to N
	OpAdd     = "add"     // one more worker (as TTIN)
	OpRemove  = "remove"  // one fewer, the oldest (as TTOU)
	OpReload  = "reload"  // rolling restart (as HUP)
	OpUpgrade = "upgrade" // binary upgrade (as USR2)
	OpStop    = "stop"    // graceful stop (as TERM), or immediate with Now (as INT)
	OpEvents  = "events"  // stream lifecycle events until the connection closes
)

// Request is what a client asks.
type Request struct {
	V   int    `json:"v"`
	Op  string `json:"op"`
	N   int    `json:"n,omitempty"`   // for OpScale
	Now bool   `json:"now,omitempty"` // for OpStop
}

// Reply is one line of the server's answer: progress, an event, or the
// outcome (Done).
type Reply struct {
	V        int     `json:"v"`
	Progress string  `json:"progress,omitempty"` // a step of the action (a worker replaced, …)
	Event    *Event  `json:"event,omitempty"`    // for OpEvents
	Done     bool    `json:"done,omitempty"`     // the last reply
	OK       bool    `json:"ok,omitempty"`       // with Done: the action did what was asked
	Error    string  `json:"error,omitempty"`    // with Done and !OK: why not
	Status   *Status `json:"status,omitempty"`   // for OpStatus, and the pool after an action
	NewPID   int     `json:"new_pid,omitempty"`  // for OpUpgrade: the new supervisor
}

// Status is the state of a pool.
type Status struct {
	PID       int            `json:"pid"`       // the supervisor's
	Addr      string         `json:"addr"`      // the address the pool serves
	Migration string         `json:"migration"` // the migration in force
	State     string         `json:"state"`     // serving, degraded, rolling, upgrading, stopping
	Desired   int            `json:"desired"`   // the worker count asked for
	Ready     int            `json:"ready"`     // workers serving
	Workers   []WorkerStatus `json:"workers"`
	// LastReload is the last rolling restart or binary upgrade and its
	// result ("reload done", "upgrade failed: …"), or "".
	LastReload string    `json:"last_reload,omitempty"`
	LastAt     time.Time `json:"last_at,omitzero"`
}

// WorkerStatus is one worker of a pool.
type WorkerStatus struct {
	Slot          int       `json:"slot"`
	Generation    int       `json:"generation"`
	PID           int       `json:"pid"`
	State         string    `json:"state"` // starting, ready, draining, stopping
	Started       time.Time `json:"started"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	RSS           int64     `json:"rss"`       // bytes, from /proc; 0 if unknown
	Served        int64     `json:"served"`    // requests answered (Run's workers), as of the last heartbeat
	InFlight      int64     `json:"in_flight"` // requests being answered, likewise
}

// Event is a lifecycle event (supervisor.Event) on the wire.
type Event struct {
	Kind       string        `json:"kind"`
	Worker     int           `json:"worker,omitempty"`
	Slot       int           `json:"slot"`
	Generation int           `json:"generation"`
	PID        int           `json:"pid,omitempty"`
	Exit       string        `json:"exit,omitempty"`
	Stderr     string        `json:"stderr,omitempty"`
	Delay      time.Duration `json:"delay,omitempty"`
	Reason     string        `json:"reason,omitempty"`
	Pool       int           `json:"pool,omitempty"`
	NewPID     int           `json:"new_pid,omitempty"`
	Time       time.Time     `json:"time"`
}

// ParseRequest decodes and checks one request line: one JSON object of
// [Request]'s fields, by their exact names, each at most once (a duplicated
// key, also in a nested value, is refused, never "the last one wins"),
// nothing after it but white space, the version [Version], a known
// operation, and N and Now only with the operations they apply to.
func ParseRequest(line []byte) (Request, error) {
	var r Request
	if len(line) > MaxLine {
		return r, fmt.Errorf("control: request of %d bytes, more than %d", len(line), MaxLine)
	}
	keys, err := checkObject(line)
	if err != nil {
		return Request{}, fmt.Errorf("control: malformed request: %w", err)
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return Request{}, fmt.Errorf("control: malformed request: %w", err)
	}
	if r.V != Version {
		return Request{}, fmt.Errorf("control: protocol version %d, this pool speaks %d", r.V, Version)
	}
	for _, k := range keys {
		switch k {
		case "v", "op", "n", "now": // Request's JSON names
		default:
			return Request{}, fmt.Errorf("control: unknown field %q in the request (known: v, op, n, now)", k)
		}
	}
	return r, checkOp(r)
}

// checkOp checks r's operation and the fields that go with it.
func checkOp(r Request) error {
	switch r.Op {
	case OpStatus, OpAdd, OpRemove, OpReload, OpUpgrade, OpStop, OpEvents:
		if r.N != 0 {
			return fmt.Errorf("control: %q: n applies to %q only", r.Op, OpScale)
		}
	case OpScale:
		if r.N < 1 {
			return fmt.Errorf("control: scale to %d: want 1 or more", r.N)
		}
	default:
		return fmt.Errorf("control: unknown operation %q", r.Op)
	}
	if r.Now && r.Op != OpStop {
		return fmt.Errorf("control: %q: now applies to %q only", r.Op, OpStop)
	}
	return nil
}

// maxDepth bounds the nesting of a request's JSON values.
const maxDepth = 32

// checkObject checks that b is one JSON object, followed by nothing but
// white space, in which no object (the request or one nested in it) has a
// key twice; it returns the request's keys in order. It walks the tokens
// with a stack of its own, bounded by maxDepth, so that no input makes it
// recurse.
func checkObject(b []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil {
		return nil, err
	} else if t != json.Delim('{') {
		return nil, errors.New("want a JSON object")
	}
	type level struct {
		keys map[string]bool // an object's keys so far; nil for an array
		key  bool            // an object's next token is a key
		at   string          // the key whose value this is ("": the request), for errors
		last string          // an object's last key
	}
	stack := []*level{{keys: map[string]bool{}, key: true}}
	var top []string
	for len(stack) > 0 {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		cur := stack[len(stack)-1]
		if d, ok := t.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if cur.keys != nil && cur.key {
			k, ok := t.(string) // the decoder allows only a string here
			if !ok {
				return nil, fmt.Errorf("an object key that is not a string: %v", t)
			}
			if cur.keys[k] {
				return nil, duplicateKey(k, cur.at)
			}
			cur.keys[k], cur.key, cur.last = true, false, k
			if len(stack) == 1 {
				top = append(top, k)
			}
			continue
		}
		cur.key = cur.keys != nil // a value: an object's next token is a key
		if d, ok := t.(json.Delim); ok {
			if len(stack) == maxDepth {
				return nil, fmt.Errorf("values nested more than %d deep", maxDepth)
			}
			next := &level{at: cur.at}
			if cur.keys != nil {
				next.at = cur.last
			}
			if d == '{' {
				next.keys, next.key = map[string]bool{}, true
			}
			stack = append(stack, next)
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the request's JSON object")
	}
	return top, nil
}

// duplicateKey is the error of a key found twice in an object, the value of
// parent ("": the request itself).
func duplicateKey(k, parent string) error {
	if parent == "" {
		return fmt.Errorf("duplicate key %q", k)
	}
	return fmt.Errorf("duplicate key %q in the value of %q", k, parent)
}

// ErrRefused is wrapped by the errors of actions the pool refused or that
// failed (the server's reason follows); other errors mean the pool could not
// be reached or spoke nonsense.
var ErrRefused = errors.New("refused or failed")
