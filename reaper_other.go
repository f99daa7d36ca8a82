//go:build unix && !linux

package clusterflock

import "sync"

// children is the set of processes this supervisor started.
type children struct{ mu sync.Mutex }

func (c *children) start(start func() (int, error)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := start()
	return err
}

func (c *children) done(pid int) {}

// reapOrphans is Linux-only; elsewhere run the pool under an init.
func reapOrphans(own *children, stop <-chan struct{}) { <-stop }
