package clusterflock

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProgressBody: with StuckTimeout, a handler reading a slow upload
// makes progress with every read that returns bytes; the body keeps
// http.MaxBytesReader working, and a request without a body keeps
// http.NoBody.
func TestProgressBody(t *testing.T) {
	r := newRequests(options{Options: Options{StuckTimeout: time.Second}})
	srv := httptest.NewServer(r.wrap(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/upload":
			n, err := io.Copy(io.Discard, req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			req.Body.Close()
			io.WriteString(w, strconv.FormatInt(n, 10))
		case "/limit":
			_, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 1024))
			if mb := (*http.MaxBytesError)(nil); errors.As(err, &mb) {
				w.WriteHeader(http.StatusRequestEntityTooLarge)
			}
		case "/nobody":
			io.WriteString(w, strconv.FormatBool(req.Body == http.NoBody))
		}
	})))
	defer srv.Close()

	pr, pw := io.Pipe()
	defer pw.Close() // before srv.Close, which waits for the upload's handler
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Post(srv.URL+"/upload", "application/octet-stream", pr)
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- resp.Status + " " + string(b)
	}()
	chunk := strings.Repeat("x", 512)
	for i := range 4 {
		_, before := r.stuck()
		if _, err := io.WriteString(pw, chunk); err != nil {
			t.Fatal(err)
		}
		waitProgress(t, r, func(inFlight, progress int64) bool { return inFlight == 1 && progress > before })
		t.Logf("chunk %d read: progress %d → %d", i, before, r.progress.Load())
	}
	pw.Close()
	if got := <-answer; got != "200 OK 2048" {
		t.Errorf("the upload's answer: %q, want %q", got, "200 OK 2048")
	}

	resp, err := http.Post(srv.URL+"/limit", "text/plain", strings.NewReader(strings.Repeat("x", 4096)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over http.MaxBytesReader's limit: %s, want 413", resp.Status)
	}
	resp, err = http.Get(srv.URL + "/nobody")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "true" {
		t.Errorf("a GET's body is http.NoBody: %s, want true", b)
	}
}
