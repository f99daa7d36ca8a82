package main

import (
	"slices"
	"testing"
)

// TestParsePerf reads what perf stat -x, prints, per process and per CPU,
// and refuses a reading perf could not take.
func TestParsePerf(t *testing.T) {
	got, ok := parsePerf("6296,,raw_syscalls:sys_enter,88928693,100.00,,\n", false)
	if !ok || !slices.Equal(got, []uint64{6296}) {
		t.Errorf("per process: %v %v", got, ok)
	}
	got, ok = parsePerf("CPU0,10,,sock:inet_sock_set_state,1006116060,100.00,,\nCPU1,30,,sock:inet_sock_set_state,1005637584,100.00,,\n", true)
	if !ok || !slices.Equal(got, []uint64{10, 30}) {
		t.Errorf("per CPU: %v %v", got, ok)
	}
	if got, ok := parsePerf("<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n", false); ok {
		t.Errorf("<not counted> parsed as %v", got)
	}
	if got, ok := parsePerf("", false); ok {
		t.Errorf("no output parsed as %v", got)
	}
	if s := shares([]uint64{10, 30}); s != "25/75" {
		t.Errorf("shares = %q, want 25/75", s)
	}
	if s := shares([]uint64{0, 0}); s != "" {
		t.Errorf("shares of nothing = %q", s)
	}
}
