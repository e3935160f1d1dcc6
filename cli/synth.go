package cli

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"headinfer/engine"
	"headinfer/engine/gguf"
)

func synthCommand() *cli.Command {
	var presets []string
	for p := range engine.SynthPresets {
		presets = append(presets, p)
	}
	slices.Sort(presets)
	return &cli.Command{
		Name:  "synth",
		Usage: "write a GGUF model with random weights of a given geometry (for tests and benchmarks)",
		Description: "The model has a working SentencePiece tokenizer and real file layout; its output is\n" +
			"meaningless. Start from a preset and override any dimension.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "output path", Required: true},
			&cli.StringFlag{Name: "preset", Value: "llama3-8b", Usage: "geometry: " + strings.Join(presets, ", ")},
			&cli.IntFlag{Name: "layers", Usage: "transformer blocks", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "dim", Usage: "embedding length", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "heads", Usage: "query heads", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "kv-heads", Usage: "key/value heads", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "head-dim", Usage: "size of one head (0: dim/heads)", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "ffn", Usage: "feed-forward hidden size", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "vocab", Usage: "vocabulary size", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "ctx", Usage: "training context length", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "window", Usage: "sliding window of the windowed layers (gemma)", DefaultText: "the preset's"},
			&cli.BoolFlag{Name: "tied", Usage: "tie the output projection to the token embeddings (--tied=false: an output matrix of its own)", DefaultText: "the preset's"},
			&cli.StringFlag{Name: "type", Value: "f16", Usage: "weight type: " + strings.Join(engine.SynthTypes, ", ") +
				" (q4_k_m, q5_k_m: Q6_K on the output matrix and on attn_v and ffn_down of some layers, as llama.cpp's presets)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random seed"},
			&cli.StringFlag{Name: "pooling", Usage: "the pooling_type an embedding model's file names (bert): mean, cls, last or none", DefaultText: "mean"},
		},
		Action: func(c *cli.Context) error {
			s, ok := engine.SynthPresets[c.String("preset")]
			if !ok {
				return fmt.Errorf("unknown preset %q (presets: %s)", c.String("preset"), strings.Join(presets, ", "))
			}
			for flag, dst := range map[string]*int{
				"layers": &s.Layers, "dim": &s.Dim, "heads": &s.Heads, "kv-heads": &s.KVHeads, "head-dim": &s.HeadDim,
				"ffn": &s.FFN, "vocab": &s.Vocab, "ctx": &s.Ctx, "window": &s.Window,
			} {
				if c.IsSet(flag) {
					*dst = c.Int(flag)
				}
			}
			if c.IsSet("tied") {
				s.Tied = c.Bool("tied")
			}
			if p, err := poolingFlag(c.String("pooling")); err != nil {
				return err
			} else if p != nil {
				s.Pooling = *p
			}
			if c.IsSet("heads") && !c.IsSet("kv-heads") {
				s.KVHeads = min(s.KVHeads, s.Heads)
			}
			t, mix, err := engine.ParseSynthType(c.String("type"))
			if err != nil {
				return err
			}
			s.Type, s.Mix, s.Seed = t, mix, c.Uint64("seed")
			if err := s.Validate(); err != nil {
				return err
			}
			f, err := os.Create(c.String("out"))
			if err != nil {
				return err
			}
			w := bufio.NewWriterSize(f, 1<<20)
			err = engine.Synth(w, s)
			if err == nil {
				err = w.Flush()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(c.String("out"))
			}
			return err
		},
	}
}

// parseType reads a weight type name such as "q8_0".
func parseType(name string) (gguf.Type, error) {
	for _, t := range gguf.SupportedTypes {
		if strings.EqualFold(name, t.String()) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("weight type %q is not supported (use %s)", name, strings.ToLower(gguf.SupportedNames()))
}
