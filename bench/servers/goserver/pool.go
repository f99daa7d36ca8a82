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

func runPool(addr string, h http.Handler, workers, gomaxprocs int, logger *slog.Logger) error {
	return clusterflock.Run(context.Background(), h, clusterflock.Options{
		Workers:         workers,
		Addr:            addr,
		ShutdownTimeout: time.Second,
		Logger:          logger,
		GOMAXPROCS:      gomaxprocs,
		// BENCH_SPARE=1 measures Options.Spare (a standby worker).
		Spare: os.Getenv("BENCH_SPARE") != "",
	})
}
