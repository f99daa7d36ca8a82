//go:build !linux

package sockets

import (
	"fmt"
	"net"
	"runtime"
)

// DetectMigration returns MigrationNone: migration needs Linux.
func DetectMigration() (Migration, string) {
	return MigrationNone, "connection migration needs Linux, not " + runtime.GOOS
}

// CheckMigration reports whether m can be used here: only MigrationNone.
func CheckMigration(m Migration) error {
	switch m {
	case MigrationNone:
		return nil
	case MigrationEBPF, MigrationSysctl, MigrationCBPF:
		return fmt.Errorf("%s migration needs Linux, not %s", m, runtime.GOOS)
	}
	return fmt.Errorf("unknown migration mechanism %q", m)
}

// EnableMigration does nothing for MigrationNone and fails for the others.
func EnableMigration(ln net.Listener, m Migration) error { return CheckMigration(m) }
