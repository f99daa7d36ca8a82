package metrics_test

import (
	"context"
	"log"
	"net/http"

	"github.com/clusterflock/clusterflock"
	"github.com/clusterflock/clusterflock/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// A pool whose handler counts its own requests: the supervisor serves the
// counter summed over every worker, past and present, on
// 127.0.0.1:9100/metrics, with the pool's metrics and
// clusterflock_http_requests_total. The example is compiled, not run: Run
// re-executes the program.
func ExampleExporter() {
	greetings := promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "greetings_total",
		Help: "Greetings sent, by language.",
	}, []string{"lang"})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		greetings.WithLabelValues("en").Inc()
		w.Write([]byte("hello\n"))
	})
	opts := clusterflock.Options{
		Metrics: &metrics.Exporter{
			Addr:    "127.0.0.1:9100",
			PerSlot: append(metrics.DefaultPerSlot(), "config_max_items"), // sums that mean nothing
		},
	}
	if err := clusterflock.Run(context.Background(), h, opts); err != nil {
		log.Fatal(err)
	}
}
