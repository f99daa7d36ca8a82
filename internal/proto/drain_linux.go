package proto

import "syscall"

// DrainSignal tells a worker the pool is in its lame-duck period
// (Options.DrainDelay): it keeps serving, with clusterflock.Draining true
// and Connection: close on responses. A realtime signal, which terminals
// and service managers never send to a process group (and which Go
// programs that do not ask for it ignore); the supervisor sends it to each
// worker's pid.
const DrainSignal = syscall.Signal(40) // SIGRTMIN+6 with glibc's numbering

// HasDrainSignal reports whether this system has DrainSignal.
const HasDrainSignal = true
