//go:build !unix

package clusterflock

import (
	"context"
	"fmt"
	"runtime"

	"github.com/clusterflock/clusterflock/internal/plug"
)

// run fails: the pool re-executes itself with inherited file descriptors
// and POSIX signals, which this OS does not have.
func run(ctx context.Context, mk func(plug.Worker) ServeFunc, o options, reqs *requests) error {
	return fmt.Errorf("clusterflock: unsupported OS %q: the pool needs a Unix system (Linux for SO_REUSEPORT balancing)", runtime.GOOS)
}
