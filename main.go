// Command headinfer runs Llama-family language models on any Vulkan GPU,
// keeping the KV cache in host memory head by head so that long contexts
// fit on small cards.
package main

import (
	"fmt"
	"os"

	"headinfer/cli"
)

func main() {
	if err := cli.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "headinfer:", err)
		os.Exit(1)
	}
}
