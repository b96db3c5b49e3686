// Command bench is the load and measurement helper behind `make bench`
// (deployments/scripts/bench): it generates the benchmark directory and
// takes the in-process measurements a shell cannot (incremental pass cost,
// sign-in lookup latency, reader latency during a publish). Every figure
// is printed as one line: "bench: name=value unit [key=value ...]".
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench gen|incremental|lookup|publish-probe|profile [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = cmdGen(os.Args[2:])
	case "incremental":
		err = cmdIncremental(os.Args[2:])
	case "lookup":
		err = cmdLookup(os.Args[2:])
	case "profile":
		err = cmdProfile(os.Args[2:])
	case "publish-probe":
		err = cmdPublishProbe(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
