package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/clusterflock/clusterflock/control"
)

// printer prints replies for people, or as JSON lines.
type printer struct {
	w    io.Writer
	json bool
}

// reply prints a reply before the outcome: progress or an event.
func (p *printer) reply(r control.Reply) {
	switch {
	case r.Event != nil: // events are JSON lines, for people too
		json.NewEncoder(p.w).Encode(r.Event)
	case r.Progress != "" && !p.json:
		fmt.Fprintln(p.w, r.Progress)
	}
}

// final prints the outcome of req.
func (p *printer) final(req control.Request, r control.Reply) {
	if p.json {
		json.NewEncoder(p.w).Encode(r)
		return
	}
	switch {
	case r.Status != nil:
		p.status(*r.Status)
	case req.Op == control.OpUpgrade:
		fmt.Fprintf(p.w, "upgraded: the new supervisor is pid %d\n", r.NewPID)
	case req.Op == control.OpEvents:
	default:
		fmt.Fprintf(p.w, "%s: done\n", req.Op)
	}
}

func (p *printer) status(st control.Status) {
	fmt.Fprintf(p.w, "supervisor %d on %s, migration %s: %s, %d of %d workers ready\n", st.PID, st.Addr, st.Migration, st.State, st.Ready, st.Desired)
	if st.LastReload != "" {
		fmt.Fprintf(p.w, "last: %s (%s ago)\n", st.LastReload, since(st.LastAt))
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tGEN\tPID\tSTATE\tUPTIME\tSERVED\tIN FLIGHT\tRSS\tHEARTBEAT")
	for _, w := range st.Workers {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%d\t%.1f MiB\t%s ago\n", w.Slot, w.Generation, w.PID, w.State,
			since(w.Started), w.Served, w.InFlight, float64(w.RSS)/(1<<20), since(w.LastHeartbeat))
	}
	tw.Flush()
}
