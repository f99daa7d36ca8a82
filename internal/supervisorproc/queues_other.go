//go:build unix && !linux

package supervisorproc

import (
	"errors"

	"github.com/clusterflock/clusterflock/internal/plug"
)

// queues is unknown without sock_diag.
func queues(addr string) ([]plug.Queue, error) {
	return nil, errors.New("accept queues are read with Linux's sock_diag")
}
