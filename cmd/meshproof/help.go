package main

import (
	"fmt"
	"io"

	"github.com/meshproof/meshproof/cmd/internal/cli"
)

// cmdVersion prints the module version and the VCS revision the binary was built from.
func cmdVersion(stdout io.Writer) int {
	fmt.Fprintln(stdout, cli.Version())
	return cli.ExitOK
}
