//go:build !nopool

package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/clusterflock/clusterflock"
	"github.com/clusterflock/clusterflock/metrics"
)

const poolAvailable = true

// runPool runs the pool shaped as sh says.
func runPool(addr string, h http.Handler, sh poolShape, logger *slog.Logger) error {
	migration := sh.migration
	if migration == "" {
		// BENCH_MIGRATION=cbpf (or ebpf, sysctl, shared, none) runs every
		// pool, and so the lifecycle steps, with that Options.Migration.
		migration = os.Getenv("BENCH_MIGRATION")
	}
	opts := clusterflock.Options{
		Workers:         sh.workers,
		Addr:            addr,
		ShutdownTimeout: time.Second,
		Logger:          logger,
		GOMAXPROCS:      sh.gomaxprocs,
		Migration:       clusterflock.Migration(migration),
		// BENCH_SPARE=1 measures Options.Spare (a standby worker).
		Spare:           os.Getenv("BENCH_SPARE") != "",
		StuckTimeout:    sh.stuck,
		KeepSysmonAwake: sh.sysmonAwake,
	}
	if sh.metricsAddr != "" {
		opts.Metrics = &metrics.Exporter{Addr: sh.metricsAddr}
	}
	return clusterflock.Run(context.Background(), h, opts)
}
