package cli

import (
	"github.com/urfave/cli/v2"
)

// benchCommand groups the benchmarks; each subcommand lives in its own
// bench_*.go file.
func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure the engine: speed and memory against context length, kernel bandwidth",
		Subcommands: []*cli.Command{
			benchContextCommand(),
			benchKernelsCommand(),
			benchSpeedCommand(),
			benchServeCommand(),
		},
	}
}
