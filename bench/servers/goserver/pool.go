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

// runPool runs the pool; metricsAddr non-empty (poolM) sets Options.Metrics
// with the exporter's defaults (GatherInterval 1s, the default registry in
// each worker, Run's HTTP metrics); stuck (poolS) is Options.StuckTimeout.
func runPool(addr string, h http.Handler, workers, gomaxprocs int, migration, metricsAddr string, stuck time.Duration, logger *slog.Logger) error {
	if migration == "" {
		// BENCH_MIGRATION=cbpf (or ebpf, sysctl, shared, none) runs every
		// pool, and so the lifecycle steps, with that Options.Migration.
		migration = os.Getenv("BENCH_MIGRATION")
	}
	opts := clusterflock.Options{
		Workers:         workers,
		Addr:            addr,
		ShutdownTimeout: time.Second,
		Logger:          logger,
		GOMAXPROCS:      gomaxprocs,
		Migration:       clusterflock.Migration(migration),
		// BENCH_SPARE=1 measures Options.Spare (a standby worker).
		Spare:        os.Getenv("BENCH_SPARE") != "",
		StuckTimeout: stuck,
	}
	if metricsAddr != "" {
		opts.Metrics = &metrics.Exporter{Addr: metricsAddr}
	}
	return clusterflock.Run(context.Background(), h, opts)
}
