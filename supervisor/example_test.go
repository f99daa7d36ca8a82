package supervisor_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/clusterflock/clusterflock/supervisor"
)

// The life of a small pool, driven by fake processes: two workers start and
// report ready, one crashes and is forked again, the pool shrinks by one and
// stops.
func Example() {
	events := make(chan supervisor.Event, 100)
	spawner := &fakeSpawner{} // a Spawner whose processes the example drives
	sup, err := supervisor.New(supervisor.Config{
		Spawner: spawner,
		Workers: 2,
		Logger:  slog.New(slog.DiscardHandler),
		OnEvent: func(e supervisor.Event) { events <- e },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan error, 1)
	go func() { done <- sup.Run(context.Background()) }()

	// until prints events up to and including the next one of kind k.
	until := func(k supervisor.EventKind) {
		for {
			select {
			case e := <-events:
				fmt.Println(project(e))
				if e.Kind == k {
					return
				}
			case <-time.After(10 * time.Second):
				fmt.Println("timed out waiting for", k)
				return
			}
		}
	}

	until(supervisor.EventSpawn)
	until(supervisor.EventSpawn)
	spawner.get(1).Ready()
	until(supervisor.EventReady)
	spawner.get(2).Ready()
	until(supervisor.EventPoolReady)

	spawner.get(2).Exit(1) // a crash: slot 1 is forked again
	until(supervisor.EventSpawn)
	spawner.get(3).Ready()
	until(supervisor.EventReady)

	sup.Retire() // the oldest worker, 1, stops
	until(supervisor.EventExit)

	sup.Stop()
	until(supervisor.EventExit)
	fmt.Println("Run:", <-done)

	// Output:
	// spawn worker=1 slot=0 gen=0
	// spawn worker=2 slot=1 gen=0
	// ready worker=1 slot=0 gen=0
	// ready worker=2 slot=1 gen=0
	// pool-ready
	// exit worker=2 slot=1 gen=0 exit status 1 (unexpected exit)
	// refork slot=1 delay=0s
	// spawn worker=3 slot=1 gen=0
	// ready worker=3 slot=1 gen=0
	// stop worker=1 slot=0 gen=0 (retired)
	// exit worker=1 slot=0 gen=0 exit status 0
	// stopping (graceful: requested)
	// stop worker=3 slot=1 gen=0 (pool stopping)
	// exit worker=3 slot=1 gen=0 exit status 0
	// Run: <nil>
}
