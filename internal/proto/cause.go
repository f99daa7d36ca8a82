package proto

import (
	"context"
	"errors"
	"strings"
)

// SignalCause returns the signal that ended ctx, as signal.NotifyContext
// names it in the context's cause ("interrupt", "terminated": the
// signal's String()), and true; or false if ctx did not end that way.
// Both processes use it to tell the program's own signal handling from a
// plain cancellation.
func SignalCause(ctx context.Context) (string, bool) {
	c := context.Cause(ctx)
	if c == nil || !errors.Is(c, context.Canceled) {
		return "", false
	}
	return strings.CutSuffix(c.Error(), " signal received")
}
