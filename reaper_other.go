//go:build unix && !linux

package clusterflock

import "os/exec"

// children is the set of processes this supervisor started.
type children struct{}

func (c *children) start(cmd *exec.Cmd) error { return cmd.Start() }

func (c *children) done(pid int) {}

// reapOrphans is Linux-only; elsewhere run the pool under an init.
func reapOrphans(own *children, stop <-chan struct{}) { <-stop }
