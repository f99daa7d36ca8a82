//go:build unix

package workerproc

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/clusterflock/clusterflock/internal/guard"
	"github.com/clusterflock/clusterflock/internal/proto"
)

// guards are the checks a worker makes at each heartbeat beyond being
// alive: MaxRequests (Config.Recycle), stuck requests and memory. Each
// that fires asks the supervisor, at every beat until it acts, to replace
// this worker.
type guards struct {
	cfg    Config
	log    *slog.Logger
	stuck  *guard.Stuck  // nil: StuckTimeout off
	memory *guard.Memory // nil: MemoryLimit off
	report string        // the stuck report, made once (its dump is written once)
}

func newGuards(cfg Config, log *slog.Logger) *guards {
	g := &guards{cfg: cfg, log: log}
	if cfg.StuckTimeout > 0 && cfg.Stuck != nil {
		g.stuck = &guard.Stuck{Timeout: cfg.StuckTimeout}
	}
	if cfg.MemoryLimit > 0 {
		g.memory = &guard.Memory{Limit: cfg.MemoryLimit, Sustain: guard.MemorySustain}
	}
	return g
}

// check returns the messages for this beat.
func (g *guards) check(now time.Time) []proto.Message {
	var out []proto.Message
	if g.cfg.Recycle != nil {
		if why, ok := g.cfg.Recycle(); ok {
			out = append(out, proto.Message{Kind: proto.Retiring, Text: why})
		}
	}
	if g.stuck != nil {
		inFlight, progress := g.cfg.Stuck()
		if d, ok := g.stuck.Observe(now, inFlight, progress); ok {
			out = append(out, proto.Message{Kind: proto.Stuck, Text: g.stuckReport(now, d, inFlight)})
		} else {
			g.report = "" // progress again: a later stall gets a dump of its own
		}
	}
	if g.memory != nil {
		if rss, err := guard.Resident(0); err == nil {
			if d, ok := g.memory.Observe(now, rss); ok {
				out = append(out, proto.Message{Kind: proto.Memory, Text: fmt.Sprintf(
					"RSS %d bytes above MemoryLimit %d for %v", rss, g.cfg.MemoryLimit, d.Round(time.Millisecond))})
			}
		}
	}
	return out
}

// stuckReport dumps the goroutines once and says what is stuck.
func (g *guards) stuckReport(now time.Time, d time.Duration, inFlight int64) string {
	if g.report == "" {
		r, err := guard.Dump(g.cfg.DumpDir, now)
		g.report = fmt.Sprintf("%d requests in flight, none progressed for %v: %s", inFlight, d.Round(time.Millisecond), r)
		if err != nil {
			g.report += fmt.Sprintf(" (the dump could not be written: %v)", err)
		}
		g.log.Error("worker stuck", "report", g.report)
	}
	return g.report
}
