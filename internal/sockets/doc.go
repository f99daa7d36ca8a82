// Package sockets holds the listening sockets a clusterflock supervisor keeps
// for its workers, and the mechanisms that make retiring a worker lossless:
//
//   - [Socket]: a listening socket held as a bare descriptor (never in the Go
//     poller), to hand to children;
//   - [Reservation]: a bound, never-listening SO_REUSEPORT socket that holds
//     the pool's port between re-forks;
//   - [Migration], [DetectMigration], [EnableMigration]: the kernel's
//     migration of connections queued on a closing listener (eBPF, sysctl);
//   - [Group]: a reuseport group one process holds and steers with classic
//     BPF (no privilege), mirroring the kernel's socket order, checked with
//     sock_diag.
package sockets
