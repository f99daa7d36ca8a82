package sdnotify

import (
	"fmt"
	"math"
	"strconv"
	"testing"
)

// FuzzListenFDs fuzzes the socket-activation variables against an oracle
// written apart from ListenFDs: the sockets are for self exactly when pid is
// a run of ASCII digits without a leading zero whose value is self; and
// then, fds must be "1". Each input is tried as is and with pid set to
// self's decimal form, so that the active half is reached however pid
// mutates.
func FuzzListenFDs(f *testing.F) {
	for _, s := range []struct {
		pid, fds string
		self     int
	}{
		{"42", "1", 42}, {"42", "2", 42}, {"42", "", 42}, {"", "1", 42}, {"43", "1", 42},
		{"+42", "1", 42}, {"042", "1", 42}, {" 42", "1", 42}, {"42\x00", "1", 42},
		{"4294967338", "1", 42}, {"9223372036854775807", "1", math.MaxInt},
		{"0", "1", 0}, {"-1", "1", -1}, {"1", "1 ", 1}, {"7", "\xff", 7},
	} {
		f.Add(s.pid, s.fds, s.self)
	}
	f.Fuzz(func(t *testing.T, pid, fds string, self int) {
		check := func(pid string) {
			active, err := ListenFDs(pid, fds, self)
			if want := namesSelf(pid, self); active != want {
				t.Fatalf("ListenFDs(%q, %q, %d): active = %v, want %v", pid, fds, self, active, want)
			}
			switch {
			case !active && err != nil:
				t.Fatalf("ListenFDs(%q, %q, %d): not for us, but err = %v", pid, fds, self, err)
			case active && fds == "1" && err != nil:
				t.Fatalf("ListenFDs(%q, %q, %d): err = %v", pid, fds, self, err)
			case active && fds != "1":
				want := fmt.Sprintf("LISTEN_FDS=%q: the pool serves exactly one socket", fds)
				if err == nil || err.Error() != want {
					t.Fatalf("ListenFDs(%q, %q, %d): err = %v, want %q", pid, fds, self, err, want)
				}
			}
		}
		check(pid)
		check(strconv.Itoa(self))
	})
}

// namesSelf is the oracle: pid is a positive decimal number, without sign,
// padding or leading zero, equal to self.
func namesSelf(pid string, self int) bool {
	if pid == "" || pid[0] == '0' {
		return false
	}
	n := 0
	for _, c := range []byte(pid) {
		if c < '0' || c > '9' {
			return false
		}
		d := int(c - '0')
		if n > (math.MaxInt-d)/10 { // beyond any int: not self
			return false
		}
		n = n*10 + d
	}
	return n == self
}
