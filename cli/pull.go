package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"headinfer/hub"
	"headinfer/progress"
)

func pullCommand() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "download a GGUF model from Hugging Face (or HF_ENDPOINT) and print its path",
		ArgsUsage: "OWNER/REPO[:QUANT] | OWNER/REPO/FILE.gguf",
		Description: "Picks the repository's .gguf whose name carries QUANT (Q4_K_M, Q8_0, ...; any case), or its only\n" +
			".gguf, or the FILE named. An interrupted download resumes where it stopped; a file is kept only once\n" +
			"its SHA-256 matches the one the endpoint states.\n\n" +
			"Environment: HF_ENDPOINT (default " + hub.DefaultEndpoint + "), HF_TOKEN (for gated or private\n" +
			"repositories; sent to HF_ENDPOINT only), HEADINFER_MODELS (where files go; default the user cache\n" +
			"directory's headinfer/models). -m OWNER/REPO:QUANT in generate, serve, plan, info and bench pulls the\n" +
			"same way on first use.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("usage: headinfer pull OWNER/REPO[:QUANT] | OWNER/REPO/FILE.gguf")
			}
			r, err := hub.ParseRef(c.Args().First())
			if err != nil {
				return err
			}
			path, err := pull(c, r)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, path)
			return nil
		},
	}
}

// modelPath is the local file a model argument names: a file that exists
// as given, or else a hub reference (OWNER/REPO:QUANT, OWNER/REPO/FILE.gguf),
// pulled on first use. Anything else is returned as given, for the loader
// to say it does not exist.
func modelPath(c *cli.Context, arg string) (string, error) {
	if arg == "" || looksLocal(arg) {
		return arg, nil
	}
	if st, err := os.Stat(arg); err == nil && !st.IsDir() {
		return arg, nil
	}
	r, err := hub.ParseRef(arg)
	if err != nil {
		return arg, nil
	}
	h, err := hub.FromEnv()
	if err != nil {
		return "", err
	}
	if p, ok := h.Local(r); ok {
		return p, nil
	}
	fmt.Fprintf(c.App.ErrWriter, "headinfer: %s is not a local file: pulling it\n", arg)
	p, err := pull(c, r)
	if err != nil {
		return "", fmt.Errorf("pulling %s: %w", arg, err)
	}
	return p, nil
}

// looksLocal says whether a model argument can only be a path: absolute
// or relative to . or ~, or a DIR/NAME.gguf (a repository is not named
// that way).
func looksLocal(arg string) bool {
	if filepath.IsAbs(arg) || strings.HasPrefix(arg, ".") || strings.HasPrefix(arg, "~") || strings.Contains(arg, `\`) {
		return true
	}
	return strings.Count(arg, "/") == 1 && strings.HasSuffix(strings.ToLower(arg), ".gguf")
}

// pull downloads r with a progress bar on a terminal, stopping cleanly on
// Ctrl-C (what was downloaded is kept for a resume).
func pull(c *cli.Context, r hub.Ref) (string, error) {
	h, err := hub.FromEnv()
	if err != nil {
		return "", err
	}
	f := barFile(c)
	var bar *progress.Bar
	h.Progress = func(file string, done, total int64) {
		if bar == nil {
			bar = progress.New(f, total, progress.Options{Description: filepath.Base(file), Bytes: true})
		}
		bar.Set(done)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	p, err := h.Pull(ctx, r)
	if err != nil {
		bar.Stop()
		if ctx.Err() != nil {
			return "", fmt.Errorf("pull of %s interrupted; run it again to resume", r)
		}
		return "", err
	}
	bar.Finish()
	return p, nil
}
