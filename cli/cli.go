// Package cli is headinfer's command line: one file per command, each a thin
// layer over the engine.
package cli

import (
	"github.com/urfave/cli/v2"
)

// Run parses args (os.Args) and runs the chosen command.
func Run(args []string) error {
	app := &cli.App{
		Name:  "headinfer",
		Usage: "run Llama-family models on any Vulkan GPU, with the KV cache in host memory head by head",
		Description: "headinfer runs GGUF models (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K weights) through Vulkan compute\n" +
			"shaders on NVIDIA, AMD, Intel and Apple GPUs, or on the CPU through Mesa's lavapipe.\n" +
			"Choose a device with --device N|NAME or the HEADINFER_DEVICE environment variable;\n" +
			"`headinfer devices` lists them.",
		HideHelpCommand: true,
		Commands: []*cli.Command{
			generateCommand(),
			serveCommand(),
			infoCommand(),
			synthCommand(),
			pullCommand(),
			devicesCommand(),
			checkCommand(),
			planCommand(),
			benchCommand(),
		},
	}
	return app.Run(args)
}

// deviceFlag is the --device flag shared by every command that opens a device.
func deviceFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "device",
		Usage:   "Vulkan device: index or name substring (see headinfer devices); default: discrete > integrated > virtual > CPU",
		EnvVars: []string{"HEADINFER_DEVICE"},
	}
}
