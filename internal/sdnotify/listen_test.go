package sdnotify

import "testing"

func TestListenFDs(t *testing.T) {
	for _, tc := range []struct {
		pid, fds string
		self     int
		active   bool
		err      string
	}{
		{"42", "1", 42, true, ""},
		{"1", "1", 1, true, ""}, // the supervisor is PID 1 in a container
		{"42", "2", 42, true, `LISTEN_FDS="2": the pool serves exactly one socket`},
		{"42", "", 42, true, `LISTEN_FDS="": the pool serves exactly one socket`},
		{"42", "01", 42, true, `LISTEN_FDS="01": the pool serves exactly one socket`},
		{"42", " 1", 42, true, `LISTEN_FDS=" 1": the pool serves exactly one socket`},
		{"42", "0", 42, true, `LISTEN_FDS="0": the pool serves exactly one socket`},
		// Not for this process: fds is not looked at.
		{"", "1", 42, false, ""},
		{"", "", 42, false, ""},
		{"43", "1", 42, false, ""},
		{"43", "2", 42, false, ""},
		// Not a positive decimal number naming self exactly.
		{"+42", "1", 42, false, ""},
		{"042", "1", 42, false, ""},
		{" 42", "1", 42, false, ""},
		{"42 ", "1", 42, false, ""},
		{"42\n", "1", 42, false, ""},
		{"0x2a", "1", 42, false, ""},
		{"4294967338", "1", 42, false, ""}, // 42 + 2^32
		{"0", "1", 0, false, ""},
		{"-1", "1", -1, false, ""},
		{"-0", "1", 0, false, ""},
	} {
		active, err := ListenFDs(tc.pid, tc.fds, tc.self)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if active != tc.active || got != tc.err {
			t.Errorf("ListenFDs(%q, %q, %d) = %v, %q; want %v, %q", tc.pid, tc.fds, tc.self, active, got, tc.active, tc.err)
		}
	}
}
