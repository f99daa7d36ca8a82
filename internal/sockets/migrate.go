package sockets

// Migration names how connections queued on a closing listener reach the
// other listeners of its group instead of being reset: the one type of the
// pool's migration modes (clusterflock.Migration converts to it).
type Migration string

// Migration mechanisms, best first.
const (
	// MigrationEBPF attaches a two-instruction BPF_PROG_TYPE_SK_REUSEPORT
	// program (SK_PASS) with the SELECT_OR_MIGRATE attach type to the group:
	// hash balancing is unchanged and queued connections migrate. Needs
	// CAP_BPF (or root) to load the program.
	MigrationEBPF Migration = "ebpf"
	// MigrationSysctl relies on net.ipv4.tcp_migrate_req=1, set by the
	// operator (this package reads it, never sets it).
	MigrationSysctl Migration = "sysctl"
	// MigrationCBPF: the process holds every socket of the group in a
	// [Group] and steers new connections with classic BPF (no privilege):
	// a socket that is to close gets none, and is drained before it closes.
	MigrationCBPF Migration = "cbpf"
	// MigrationNone: connections still queued on a closing listener are
	// reset by the kernel. Retirement stays graceful but may lose a few
	// connections under load.
	MigrationNone Migration = "none"
	// MigrationShared: every worker accepts on one socket the supervisor
	// holds, so nothing is ever queued on a retiring worker's own listener.
	MigrationShared Migration = "shared"
	// MigrationAuto: the best of the above that this process can use.
	MigrationAuto Migration = ""
)
