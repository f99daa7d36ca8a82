package metrics

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gathered returns the families reg gathers, by name.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// codeCounts is clusterflock_http_requests_total by its code label.
func codeCounts(t *testing.T, fams map[string]*dto.MetricFamily) map[string]float64 {
	t.Helper()
	mf := fams["clusterflock_http_requests_total"]
	if mf == nil {
		t.Fatal("no clusterflock_http_requests_total")
	}
	if mf.GetType() != dto.MetricType_COUNTER {
		t.Errorf("clusterflock_http_requests_total is a %v, want a counter", mf.GetType())
	}
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "code" {
			t.Fatalf("labels %v, want only code", m.GetLabel())
		}
		out[m.GetLabel()[0].GetValue()] += m.GetCounter().GetValue()
	}
	return out
}

// TestHTTPMetricsCounts: every request is counted once under the status
// it was answered with (200 when the handler never calls WriteHeader,
// codes outside 100..599 under their own number), the histogram counts
// as many, and nothing stays in flight.
func TestHTTPMetricsCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newHTTPMetrics(reg)
	var inside sync.WaitGroup
	release := make(chan struct{})
	h := m.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/implicit":
			io.WriteString(w, "ok")
		case "/silent": // neither WriteHeader nor Write
		case "/missing":
			http.NotFound(w, r)
		case "/unavailable":
			w.WriteHeader(http.StatusServiceUnavailable)
			w.WriteHeader(http.StatusOK) // superfluous: the client got 503
			io.WriteString(w, "down")
		case "/early":
			w.WriteHeader(http.StatusEarlyHints) // informational, then the real answer
			w.WriteHeader(http.StatusAccepted)
		case "/odd":
			w.WriteHeader(799)
		case "/flush":
			w.(http.Flusher).Flush()
		case "/readfrom":
			w.(io.ReaderFrom).ReadFrom(strings.NewReader("body"))
		case "/block":
			inside.Done()
			<-release
		}
	}))
	want := map[string]float64{}
	do := func(path, code string, n int) {
		for range n {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
		}
		want[code] += float64(n)
	}
	do("/implicit", "200", 5)
	do("/silent", "200", 2)
	do("/flush", "200", 1)
	do("/readfrom", "200", 1)
	do("/missing", "404", 3)
	do("/unavailable", "503", 4)
	do("/early", "202", 1)
	do("/odd", "799", 2)

	// In flight: two requests held inside the handler.
	inside.Add(2)
	var done sync.WaitGroup
	for range 2 {
		done.Go(func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/block", nil)) })
	}
	inside.Wait()
	if g := gathered(t, reg)["clusterflock_http_requests_in_flight"].GetMetric()[0].GetGauge().GetValue(); g != 2 {
		t.Errorf("in flight with 2 requests inside the handler: %v", g)
	}
	close(release)
	done.Wait()
	want["200"] += 2

	fams := gathered(t, reg)
	got := codeCounts(t, fams)
	if len(got) != len(want) {
		t.Errorf("codes %v, want %v", got, want)
	}
	total := 0.0
	for code, n := range want {
		if got[code] != n {
			t.Errorf("code %s: %v requests, want %v (all: %v)", code, got[code], n, got)
		}
		total += n
	}
	hist := fams["clusterflock_http_request_duration_seconds"]
	if hist.GetType() != dto.MetricType_HISTOGRAM || len(hist.GetMetric()) != 1 || len(hist.GetMetric()[0].GetLabel()) != 0 {
		t.Fatalf("duration %v, want one histogram without labels", hist)
	}
	hm := hist.GetMetric()[0].GetHistogram()
	if float64(hm.GetSampleCount()) != total {
		t.Errorf("histogram count %d, want %v", hm.GetSampleCount(), total)
	}
	if len(hm.GetBucket()) != len(prometheus.DefBuckets) {
		t.Errorf("%d buckets, want prometheus.DefBuckets (%d)", len(hm.GetBucket()), len(prometheus.DefBuckets))
	}
	for i, b := range hm.GetBucket() {
		if b.GetUpperBound() != prometheus.DefBuckets[i] {
			t.Errorf("bucket %d: %v, want %v", i, b.GetUpperBound(), prometheus.DefBuckets[i])
		}
	}
	if g := fams["clusterflock_http_requests_in_flight"].GetMetric()[0].GetGauge().GetValue(); g != 0 {
		t.Errorf("in flight after all requests returned: %v", g)
	}
	for name, help := range map[string]string{
		"clusterflock_http_requests_total":           "HTTP requests served by the pool's workers, by status code.",
		"clusterflock_http_request_duration_seconds": "Time from a request's arrival in the handler to its handler's return.",
		"clusterflock_http_requests_in_flight":       "HTTP requests being served by the pool's workers.",
	} {
		if got := fams[name].GetHelp(); got != help {
			t.Errorf("%s help %q, want %q", name, got, help)
		}
	}
	if fams["clusterflock_http_requests_in_flight"].GetType() != dto.MetricType_GAUGE {
		t.Errorf("in flight is a %v, want a gauge", fams["clusterflock_http_requests_in_flight"].GetType())
	}
}

// TestHTTPMetricsWriter: through the wrapper, a real server's writer can
// still be flushed (directly and with http.ResponseController) and
// hijacked, and the requests are counted.
func TestHTTPMetricsWriter(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newHTTPMetrics(reg)
	flushed := make(chan struct{})
	srv := httptest.NewServer(m.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/flush":
			io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			<-flushed // the client has read "first" before the handler returns
			io.WriteString(w, "second\n")
		case "/controller":
			rc := http.NewResponseController(w)
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "first\n")
			if err := rc.Flush(); err != nil {
				t.Errorf("ResponseController.Flush: %v", err)
			}
			<-flushed
		case "/hijack":
			conn, rw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("Hijack: %v", err)
				return
			}
			defer conn.Close()
			rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
			rw.Flush()
		case "/controller-hijack":
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("ResponseController.Hijack: %v", err)
				return
			}
			io.WriteString(conn, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
			conn.Close()
		}
	})))
	defer srv.Close()

	for _, path := range []string{"/flush", "/controller"} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "first\n" {
			t.Errorf("%s: first line %q, %v: not flushed", path, line, err)
		}
		flushed <- struct{}{}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, c := range []struct{ path, status string }{{"/hijack", "200 OK"}, {"/controller-hijack", "204 No Content"}} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, "GET "+c.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.Status != c.status || c.path == "/hijack" && string(body) != "hijacked" {
			t.Errorf("%s: %s %q from the hijacked connection", c.path, resp.Status, body)
		}
	}
	srv.Close()
	// Close does not wait for the handlers of hijacked connections, which
	// count their request when they return: wait (bounded) for all four.
	var got map[string]float64
	for deadline := time.Now().Add(5 * time.Second); ; {
		got = codeCounts(t, gathered(t, reg))
		if got["200"]+got["201"] >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
	// A hijacked request that never called WriteHeader counts as 200, as
	// promhttp counted it.
	if got["200"] != 3 || got["201"] != 1 || len(got) != 2 {
		t.Errorf("codes %v, want 200: 3 (flush, hijack ×2), 201: 1", got)
	}
}

// BenchmarkHTTPMetrics is the per-request cost of Run's HTTP metrics
// around a trivial handler (the wrapper alone: no network).
func BenchmarkHTTPMetrics(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok"))
	})
	req := httptest.NewRequest("GET", "/", nil)
	rec := httptest.NewRecorder()
	run := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		for b.Loop() {
			rec.Body.Reset()
			h.ServeHTTP(rec, req)
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, ok) })
	b.Run("wrapped", func(b *testing.B) { run(b, newHTTPMetrics(prometheus.NewRegistry()).wrap(ok)) })
	b.Run("parallel", func(b *testing.B) {
		h := newHTTPMetrics(prometheus.NewRegistry()).wrap(ok)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			rec := httptest.NewRecorder()
			for pb.Next() {
				rec.Body.Reset()
				h.ServeHTTP(rec, req)
			}
		})
	})
}
