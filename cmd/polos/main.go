// Command polos is the Polos command line. See docs/cli.md.
package main

import (
	"os"

	"github.com/polos-run/polos/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args, cli.StdIO())) }
