// Command benchctl is the benchmark harness behind bench/run.
//
//	benchctl suite  [flags]   start servers, drive them with wrk in interleaved
//	                          rounds, measure lifecycle costs, write CSVs + meta.json
//	benchctl report [flags]   turn those into RESULTS.md and an SVG plot
//
// Run bench/run rather than this directly; bench/README.md explains both.
package main

import (
	"cmp"
	"fmt"
	"os"
	"slices"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchctl suite|report [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "suite":
		err = suiteMain(os.Args[2:])
	case "report":
		err = reportMain(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchctl:", err)
		os.Exit(1)
	}
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
