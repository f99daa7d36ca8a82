// Command flockctl drives a clusterflock pool through its control socket,
// and waits for every action's outcome:
//
//	flockctl [-p pid | -a addr | -s socket] [-timeout d] [-json] command
//
// Commands: status, scale N, add, remove, reload, upgrade, stop [-now],
// events. With none of -p, -a, -s it finds the one pool of this user. Exit
// codes: 0 done, 1 refused or failed (the reason on stderr), 2 usage or the
// pool cannot be reached.
//
// Install with go install github.com/clusterflock/clusterflock/cmd/flockctl@latest.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/clusterflock/clusterflock/control"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	usageFormat = `usage: flockctl [-p pid | -a addr | -s socket] [-timeout d] [-json] command
commands: status | scale N | add | remove | reload | upgrade | stop [-now] | events
`
)

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("flockctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageFormat); fs.PrintDefaults() }
	pid := fs.Int("p", 0, "the pool's supervisor `pid`")
	addr := fs.String("a", "", "the `address` the pool serves")
	sock := fs.String("s", "", "the control `socket` path")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: no limit)")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	req, err := request(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "flockctl: %v\n", err)
		fs.Usage()
		return exitUsage
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if *timeout > 0 {
		var c context.CancelFunc
		ctx, c = context.WithTimeout(ctx, *timeout)
		defer c()
	}
	path := *sock
	if path == "" {
		var foreign []control.Foreign
		path, foreign, err = control.FindForeign(ctx, control.DefaultDir(), *pid, *addr)
		if err != nil {
			fmt.Fprintf(stderr, "flockctl: %v\n", err)
			return exitUsage
		}
		for _, f := range foreign {
			fmt.Fprintf(stderr, "flockctl: warning: ignored %v: another user's socket; remove it\n", f)
		}
	}
	out := &printer{w: stdout, json: *asJSON}
	final, err := (&control.Client{Path: path}).Do(ctx, req, out.reply)
	switch {
	case errors.Is(err, control.ErrRefused):
		fmt.Fprintf(stderr, "flockctl: %s: %s\n", req.Op, final.Error)
		return exitFailed
	case req.Op == control.OpEvents && errors.Is(err, context.Canceled):
		return exitOK // interrupted, as asked
	case err != nil:
		fmt.Fprintf(stderr, "flockctl: %s: %v\n", req.Op, err)
		if errors.Is(err, context.DeadlineExceeded) {
			return exitFailed
		}
		return exitUsage
	}
	out.final(req, final)
	return exitOK
}

// request parses the command line's command.
func request(args []string) (control.Request, error) {
	if len(args) == 0 {
		return control.Request{}, errors.New("no command")
	}
	r := control.Request{Op: args[0]}
	rest := args[1:]
	switch r.Op {
	case control.OpScale:
		if len(rest) != 1 {
			return r, errors.New("scale takes one number")
		}
		n, err := strconv.Atoi(rest[0])
		if err != nil || n < 1 {
			return r, fmt.Errorf("scale %q: want a number of workers, 1 or more", rest[0])
		}
		r.N, rest = n, nil
	case control.OpStop:
		if len(rest) == 1 && (rest[0] == "-now" || rest[0] == "--now") {
			r.Now, rest = true, nil
		}
	case control.OpStatus, control.OpAdd, control.OpRemove, control.OpReload, control.OpUpgrade, control.OpEvents:
	default:
		return r, fmt.Errorf("unknown command %q", r.Op)
	}
	if len(rest) > 0 {
		return r, fmt.Errorf("%s: unexpected arguments %q", r.Op, rest)
	}
	return r, nil
}

// since formats the time from t to now for a table.
func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Millisecond).String()
}
