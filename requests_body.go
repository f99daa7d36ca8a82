package clusterflock

import (
	"io"
	"net/http"
)

// watchBody makes each read of req's body that returns bytes progress (a
// slow upload is not stuck). A request without a body keeps http.NoBody.
func (r *requests) watchBody(req *http.Request) {
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &progressBody{ReadCloser: req.Body, r: r}
	}
}

// progressBody counts a body read that returns bytes as progress: one
// atomic addition a Read. Close is the server's body's.
type progressBody struct {
	io.ReadCloser
	r *requests
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.r.progress.Add(1)
	}
	return n, err
}
