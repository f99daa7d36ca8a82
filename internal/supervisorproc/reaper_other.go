//go:build unix && !linux

package supervisorproc

// reapOrphans is Linux-only; elsewhere run the pool under an init.
func reapOrphans(own *children, stop <-chan struct{}) { <-stop }
