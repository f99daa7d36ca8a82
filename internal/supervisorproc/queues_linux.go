package supervisorproc

import (
	"net"
	"strconv"

	"github.com/clusterflock/clusterflock/internal/plug"
	"github.com/clusterflock/clusterflock/internal/sockdiag"
)

// queues returns the accept queues of the sockets listening on addr's port.
func queues(addr string) ([]plug.Queue, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil, err
	}
	qs, err := sockdiag.ListenQueues(port)
	out := make([]plug.Queue, len(qs))
	for i, q := range qs {
		out[i] = plug.Queue{Len: q.Len, Max: q.Max}
	}
	return out, err
}
