package metrics

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// scrapeServer serves a scrapeHandler of gather, writing each response
// within write, on a server as the hub's (no WriteTimeout).
func scrapeServer(t *testing.T, gather http.HandlerFunc, write time.Duration) (*scrapeHandler, *httptest.Server) {
	t.Helper()
	s := &scrapeHandler{gather: gather, gathers: make(chan struct{}, maxGathers), writes: make(chan struct{}, maxWrites), write: write}
	srv := httptest.NewUnstartedServer(s)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the panics' stacks
	srv.Start()
	t.Cleanup(srv.Close)
	return s, srv
}

// TestScrapePanicsReleaseSlots: gathers that panic (net/http recovers
// them) leave no slot taken: the next scrape is answered 200.
func TestScrapePanicsReleaseSlots(t *testing.T) {
	_, srv := scrapeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("panic") {
			panic("a collector panicked")
		}
		io.WriteString(w, "app_total 1\n")
	}, scrapeWrite)
	client := &http.Client{Timeout: 5 * time.Second}
	for range 2 * maxGathers {
		if resp, err := client.Get(srv.URL + "/metrics?panic"); err == nil {
			resp.Body.Close()
			t.Fatalf("a panicking gather answered %d, want its connection closed", resp.StatusCode)
		}
	}
	resp, err := client.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "app_total 1\n" {
		t.Errorf("after %d panicking gathers: status %d, body %q; want 200 and the gather's", 2*maxGathers, resp.StatusCode, body)
	}
}

// TestScrapeReusedConnection: a scraper that reuses its keep-alive
// connection later than the write deadline of its last response gets an
// answer on it: a 503 while every gather slot is busy, then a 200.
func TestScrapeReusedConnection(t *testing.T) {
	const write = 50 * time.Millisecond
	s, srv := scrapeServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "app_total 1\n") }, write)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	scrape := func() int {
		t.Helper()
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("a scrape on the reused connection: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := scrape(); code != http.StatusOK {
		t.Fatalf("first scrape: %d, want 200", code)
	}
	for range maxGathers {
		s.gathers <- struct{}{}
	}
	time.Sleep(3 * write) // past the first response's write deadline: what this test is about
	if code := scrape(); code != http.StatusServiceUnavailable {
		t.Errorf("scrape with every gather slot busy: %d, want 503", code)
	}
	for range maxGathers {
		<-s.gathers
	}
	time.Sleep(3 * write)
	if code := scrape(); code != http.StatusOK {
		t.Errorf("scrape with the slots free again: %d, want 200", code)
	}
}
