package guard

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Resident returns the resident set of process pid (0: this process) in
// bytes, from Linux's /proc/<pid>/statm. It is the one reader of RSS for
// the memory guard, the control socket's status and the metrics.
func Resident(pid int) (int64, error) {
	p := "/proc/self/statm"
	if pid != 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/statm"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("malformed %s: %q", p, b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed %s: %w", p, err)
	}
	return pages * int64(os.Getpagesize()), nil
}
