//go:build !nopool

package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/clusterflock/clusterflock"
)

const poolAvailable = true

func runPool(addr string, h http.Handler, workers, gomaxprocs int, migration string, logger *slog.Logger) error {
	if migration == "" {
		// BENCH_MIGRATION=cbpf (or ebpf, sysctl, shared, none) runs every
		// pool, and so the lifecycle steps, with that Options.Migration.
		migration = os.Getenv("BENCH_MIGRATION")
	}
	return clusterflock.Run(context.Background(), h, clusterflock.Options{
		Workers:         workers,
		Addr:            addr,
		ShutdownTimeout: time.Second,
		Logger:          logger,
		GOMAXPROCS:      gomaxprocs,
		Migration:       clusterflock.Migration(migration),
		// BENCH_SPARE=1 measures Options.Spare (a standby worker).
		Spare: os.Getenv("BENCH_SPARE") != "",
	})
}
