package clusterflock

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestOptionsDefaults(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	o, err := Options{}.withDefaults(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if o.Workers != 0 || o.Addr != ":5000" || o.ShutdownTimeout != time.Second || o.Logger == nil {
		t.Errorf("defaults = %+v, want Workers 0 (counted by the supervisor), Addr :5000, ShutdownTimeout 1s, a Logger", o.Options)
	}
	if c := o.supervisorConfig(); c.Workers < 1 || c.CPUs < 1 || c.Workers != c.CPUs {
		t.Errorf("supervisor config: Workers %d, CPUs %d; want one worker per CPU", c.Workers, c.CPUs)
	}
	env["PORT"] = "8123"
	if o, err = (Options{}).withDefaults(getenv); err != nil || o.Addr != ":8123" {
		t.Errorf("with PORT=8123: Addr %q, err %v; want :8123", o.Addr, err)
	}
	if o, err = (Options{Addr: "127.0.0.1:0"}).withDefaults(getenv); err != nil || o.Addr != "127.0.0.1:0" {
		t.Errorf("explicit Addr: %q, %v", o.Addr, err)
	}
}

func TestOptionsBadInput(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		port string
		want []string // substrings of the error
	}{
		{Options{Workers: -1}, "", []string{"Options.Workers", "-1"}},
		{Options{ShutdownTimeout: -time.Second}, "", []string{"Options.ShutdownTimeout", "-1s"}},
		{Options{GOMAXPROCS: -2}, "", []string{"Options.GOMAXPROCS", "-2"}},
		{Options{Addr: "127.0.0.1:notaport"}, "", []string{"Options.Addr", "127.0.0.1:notaport"}},
		{Options{Addr: "127.0.0.1"}, "", []string{"Options.Addr", "127.0.0.1"}},
		{Options{Addr: ":70000"}, "", []string{"Options.Addr", "70000"}},
		{Options{}, "http", []string{"PORT", "http"}},
	} {
		_, err := tc.opts.withDefaults(func(string) string { return tc.port })
		if err == nil {
			t.Errorf("%+v (PORT=%q): no error", tc.opts, tc.port)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) || !strings.HasPrefix(err.Error(), "clusterflock: ") {
				t.Errorf("%+v (PORT=%q): error %q does not name %q", tc.opts, tc.port, err, w)
			}
		}
	}
}

// A worker marker that does not name this process's parent (its supervisor
// died as it started, or the variable was copied) is refused: never a
// nested pool.
func TestForeignWorkerMarkerIsRefused(t *testing.T) {
	for _, v := range []string{"999999:0:0:ebpf:own:127.0.0.1:1", "garbage"} {
		t.Setenv("CLUSTERFLOCK_WORKER", v)
		if IsWorker() {
			t.Errorf("IsWorker() with %q = true", v)
		}
		err := Run(t.Context(), http.NotFoundHandler(), Options{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("Run with CLUSTERFLOCK_WORKER=%q: %v, want an error refusing to start", v, err)
		}
	}
}

func TestServerTemplateChecked(t *testing.T) {
	for _, tmpl := range []*http.Server{{Addr: ":80"}, {Handler: http.NotFoundHandler()}} {
		err := Run(t.Context(), http.NotFoundHandler(), Options{Server: tmpl})
		if err == nil || !strings.Contains(err.Error(), "Options.Server") {
			t.Errorf("Run with Server %+v: %v, want an error naming Options.Server", tmpl, err)
		}
	}
	if err := Serve(t.Context(), func(context.Context, net.Listener) error { return nil }, Options{MaxRequests: 5}); err == nil {
		t.Error("Serve with MaxRequests: no error")
	}
}
