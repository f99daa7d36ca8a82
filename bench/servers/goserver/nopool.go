//go:build nopool

package main

import (
	"errors"
	"log/slog"
	"net/http"
)

// Built with -tags nopool when the library does not compile: the run script
// then measures the other servers and reports the pool as skipped.
const poolAvailable = false

func runPool(string, http.Handler, poolShape, *slog.Logger) error {
	return errors.New("built with -tags nopool: the clusterflock pool is not available")
}
