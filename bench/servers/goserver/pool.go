//go:build !nopool

package main

import (
	"context"
	"log/slog"
	"net/http"
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
	})
}
