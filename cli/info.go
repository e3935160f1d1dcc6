package cli

import (
	"fmt"
	"os"
	"slices"

	"github.com/urfave/cli/v2"

	"headinfer/bytesize"
	"headinfer/engine"
	"headinfer/engine/gguf"
)

func infoCommand() *cli.Command {
	return &cli.Command{
		Name:      "info",
		Usage:     "describe a GGUF model: architecture, geometry, tensor types, tokenizer, device memory needed",
		ArgsUsage: "MODEL (a GGUF file, or OWNER/REPO:QUANT on Hugging Face)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "ctx-size", Aliases: []string{"c"}, Usage: "context size for the memory estimate (0 = training context, at most 4096)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("usage: headinfer info MODEL")
			}
			path, err := modelPath(c, c.Args().First())
			if err != nil {
				return err
			}
			f, err := gguf.OpenWith(path, gguf.Options{AllowUnsupported: true})
			if err != nil {
				return err
			}
			defer f.Close()
			w := c.App.Writer
			st, _ := os.Stat(path)
			fmt.Fprintf(w, "file:          %s (%s, GGUF v%d, %d keys, %d tensors)\n", path, bytesize.Format(uint64(st.Size())), f.Version, len(f.KV), len(f.Tensors))
			counts := map[gguf.Type]int{}
			var weights uint64
			for _, ti := range f.Tensors {
				counts[ti.Type]++
				weights += ti.Bytes()
			}
			var types []gguf.Type
			for t := range counts {
				types = append(types, t)
			}
			slices.Sort(types)
			fmt.Fprint(w, "tensor types: ")
			for _, t := range types {
				fmt.Fprintf(w, " %v×%d", t, counts[t])
			}
			fmt.Fprintln(w)
			cfg, err := engine.ConfigOf(f)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "architecture:  %s (%s)\n", cfg.Arch, cfg.Name)
			fmt.Fprintf(w, "geometry:      %d layers, dim %d, %d heads (%d KV heads, head dim %d), ffn %d, vocab %d\n",
				cfg.Layers, cfg.Dim, cfg.Heads, cfg.KVHeads, cfg.HeadDim, cfg.FFN, cfg.Vocab)
			fmt.Fprintf(w, "rope:          %d dims, base %g, neox %v, linear scale %g, llama3 scaling %v\n",
				cfg.RopeDim, cfg.RopeBase, cfg.RopeNeox, cfg.RopeScale, cfg.Llama3 != nil)
			fmt.Fprintf(w, "context:       trained for %d tokens\n", cfg.TrainCtx)
			tm, _ := f.String("tokenizer.ggml.model")
			toks, _ := f.Strings("tokenizer.ggml.tokens")
			fmt.Fprintf(w, "tokenizer:     %s, %d tokens\n", tm, len(toks))
			if err := f.CheckTypes(); err != nil {
				fmt.Fprintf(w, "loadable:      no: %v\n", err)
				return nil
			}
			ctx := c.Int("ctx-size")
			if ctx <= 0 {
				ctx = min(cfg.TrainCtx, 4096)
			}
			kv := uint64(2 * 2 * cfg.Layers * cfg.KVHeads * cfg.HeadDim * ctx)
			fmt.Fprintf(w, "device memory: weights %s + f16 KV cache for %d tokens %s (+ activations)\n", bytesize.Format(weights), ctx, bytesize.Format(kv))
			return nil
		},
	}
}
