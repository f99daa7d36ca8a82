//go:build unix

package supervisorproc

import (
	"os/exec"
	"sync"
)

// children is the set of processes this supervisor started and waits for
// itself (workers, a new supervisor). The reaper leaves them alone.
type children struct {
	mu   sync.Mutex
	pids map[int]bool
}

// start starts cmd and records its pid, with the set locked so that the
// reaper cannot see the child before it is recorded.
func (c *children) start(cmd *exec.Cmd) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	if c.pids == nil {
		c.pids = make(map[int]bool)
	}
	c.pids[cmd.Process.Pid] = true
	return nil
}

func (c *children) done(pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pids, pid)
}

func (c *children) has(pid int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pids[pid]
}
