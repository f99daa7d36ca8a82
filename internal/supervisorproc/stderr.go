//go:build unix

package supervisorproc

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"sync"
	"time"
)

// stderrTap reads a worker's stderr until the worker is ready (then the
// worker writes to the supervisor's stderr directly; see proto.StderrFD),
// passes each line on whole, and keeps the last one: why a worker that
// died at start died.
type stderrTap struct {
	r    *os.File
	done chan struct{} // closed when run returns
	mu   sync.Mutex
	last string
}

// maxTapLine bounds a line kept, and a line passed on in one write.
const maxTapLine = 4 << 10

// newStderrTap returns a tap and the write end to give the worker as fd 2.
func newStderrTap() (*stderrTap, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	return &stderrTap{r: r, done: make(chan struct{})}, w, nil
}

// run passes lines on to dst until EOF (the worker and everything it
// started have closed their copies) or stop's deadline.
func (t *stderrTap) run(dst io.Writer) {
	defer close(t.done)
	defer t.r.Close()
	br := bufio.NewReaderSize(t.r, maxTapLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			dst.Write(line)
			if s := string(bytes.TrimSpace(line)); s != "" {
				t.mu.Lock()
				t.last = s
				t.mu.Unlock()
			}
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// stop waits up to linger for the tap to reach EOF (a grandchild may still
// hold the pipe), then stops it, and returns the last line.
func (t *stderrTap) stop(linger time.Duration) string {
	select {
	case <-t.done:
	case <-time.After(linger):
		t.r.SetReadDeadline(time.Now())
		<-t.done
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}
