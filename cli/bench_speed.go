package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"headinfer/bytesize"
	"headinfer/engine"
	"headinfer/engine/kernel"
)

// benchSpeedCommand measures prompt processing and generation the way
// llama-bench does (ppN, tgN), so that numbers compare across engines.
func benchSpeedCommand() *cli.Command {
	return &cli.Command{
		Name:  "speed",
		Usage: "prompt processing (ppN) and generation (tgN) speed, with the work handed to the device per token",
		UsageText: "headinfer bench speed -m MODEL [--pp 256] [--tg 64] [--reps 3] [--json]\n\n" +
			"After an untimed warm-up of the same shapes (compiling pipelines, recording command buffers),\n" +
			"each repetition times a prefill of --pp prompt tokens into an empty context, then --tg decode\n" +
			"steps after a 5-token prompt, greedy. Prints the median of --reps repetitions.",
		Flags: append(modelFlags(),
			&cli.IntFlag{Name: "pp", Value: 256, Usage: "prompt tokens to process in the prefill test (0 = skip)"},
			&cli.IntFlag{Name: "tg", Value: 64, Usage: "tokens to generate in the decode test (0 = skip)"},
			&cli.IntFlag{Name: "reps", Value: 3, Usage: "timed repetitions; the median is reported"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as one JSON object"},
		),
		Action: benchSpeed,
	}
}

// speedResult is what bench speed reports.
type speedResult struct {
	Model           string  `json:"model"`
	Device          string  `json:"device"`
	PromptTokens    int     `json:"pp_tokens"`
	PromptTokPerSec float64 `json:"pp_tokens_per_s"`
	GenTokens       int     `json:"tg_tokens"`
	GenTokPerSec    float64 `json:"tg_tokens_per_s"`
	// Per decode step: kernel dispatches, command buffers submitted, and
	// host waits.
	DispatchesPerToken  float64 `json:"dispatches_per_token"`
	SubmissionsPerToken float64 `json:"submissions_per_token"`
	HostWaitsPerToken   float64 `json:"host_waits_per_token"`
	WeightBytes         uint64  `json:"weight_bytes"`
	DeviceBytesPeak     uint64  `json:"device_bytes_peak"`
	// Decode reads DecodeBytes of weights per token: at GenTokPerSec that
	// is DecodeGBps, against the copy kernel's CopyGBps on the same
	// device (bytes read and written).
	DecodeBytes uint64  `json:"decode_bytes_per_token"`
	DecodeGBps  float64 `json:"decode_weight_gbps"`
	CopyGBps    float64 `json:"copy_gbps"`
	// On a model split over devices (--devices): each device's share of
	// a decode step's wall time, in layer order, and the bytes of hidden
	// state the host carries between them per token.
	DeviceMsPerToken     []float64 `json:"device_ms_per_token,omitempty"`
	HandOffBytesPerToken float64   `json:"hand_off_bytes_per_token,omitempty"`
}

func benchSpeed(c *cli.Context) error {
	pp, tg, reps := c.Int("pp"), c.Int("tg"), c.Int("reps")
	if pp < 0 || tg < 0 || reps <= 0 || pp+tg == 0 {
		return fmt.Errorf("--pp and --tg must be ≥ 0 (not both 0) and --reps positive")
	}
	opt, err := modelOptions(c)
	if err != nil {
		return err
	}
	const short = 5 // prompt before the decode test
	if opt.CtxSize == 0 {
		opt.CtxSize = max(pp, short+tg)
	}
	path, err := modelPath(c, c.String("model"))
	if err != nil {
		return err
	}
	m, err := loadWithBars(c, path, opt, false)
	if err != nil {
		return err
	}
	defer m.Close()
	se, err := m.NewSession()
	if err != nil {
		return err
	}
	defer se.Close()
	if n := max(pp, short+tg); n > se.CtxSize() {
		return fmt.Errorf("the test needs %d positions, the context holds %d: pass a larger --ctx-size", n, se.CtxSize())
	}
	prompt := benchPrompt(m, max(pp, short))
	ctx := context.Background()

	prefill := func() (time.Duration, error) {
		se.Reset()
		t0 := time.Now()
		if err := se.Prefill(ctx, prompt[:pp], false); err != nil {
			return 0, err
		}
		if _, err := se.Argmax(); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	var steps engine.Stats // the last decode test's work
	decode := func() (time.Duration, error) {
		se.Reset()
		if err := se.Prefill(ctx, prompt[:short], false); err != nil {
			return 0, err
		}
		before := se.Stats()
		t0 := time.Now()
		for range tg {
			id, err := se.Argmax()
			if err != nil {
				return 0, err
			}
			if err := se.Decode(id, false); err != nil {
				return 0, err
			}
		}
		d := time.Since(t0)
		steps = se.Stats().Sub(before)
		return d, nil
	}

	var pps, tgs []float64
	for rep := -1; rep < reps; rep++ { // rep −1 is the warm-up
		if pp > 0 {
			d, err := prefill()
			if err != nil {
				return err
			}
			if rep >= 0 {
				pps = append(pps, float64(pp)/d.Seconds())
			}
		}
		if tg > 0 {
			d, err := decode()
			if err != nil {
				return err
			}
			if rep >= 0 {
				tgs = append(tgs, float64(tg)/d.Seconds())
			}
		}
	}
	r := speedResult{
		Model: c.String("model"), Device: deviceNames(m),
		PromptTokens: pp, PromptTokPerSec: median(pps),
		GenTokens: tg, GenTokPerSec: median(tgs),
		WeightBytes: m.WeightBytes(), DeviceBytesPeak: se.Memory().DeviceBytesPeak,
		DecodeBytes: m.DecodeBytes(),
	}
	r.DecodeGBps = float64(r.DecodeBytes) * r.GenTokPerSec / 1e9
	if tg > 0 {
		// The yardstick: a plain copy as large as a big layer's matrix.
		cp, err := kernel.BenchCopy(m.Device(), 64<<20, 10)
		if err != nil {
			return err
		}
		r.CopyGBps = cp.GBps
	}
	if n := float64(steps.Steps); n > 0 {
		r.DispatchesPerToken = float64(steps.Dispatches) / n
		r.SubmissionsPerToken = float64(steps.Submissions) / n
		r.HostWaitsPerToken = float64(steps.HostWaits) / n // one per step, more with CPU decode attention
		for _, d := range steps.DeviceTime {
			r.DeviceMsPerToken = append(r.DeviceMsPerToken, d.Seconds()*1e3/n)
		}
		r.HandOffBytesPerToken = float64(steps.HandOffBytes) / n
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "model %s on %s: weights %s, device memory peak %s\n", r.Model, r.Device,
		bytesize.Format(r.WeightBytes), bytesize.Format(r.DeviceBytesPeak))
	if pp > 0 {
		fmt.Fprintf(w, "pp%d: %8.1f tokens/s (median of %d)\n", pp, r.PromptTokPerSec, reps)
	}
	if tg > 0 {
		fmt.Fprintf(w, "tg%d: %8.2f tokens/s (median of %d); per token: %.0f dispatches, %.0f submissions, %.0f host wait\n",
			tg, r.GenTokPerSec, reps, r.DispatchesPerToken, r.SubmissionsPerToken, r.HostWaitsPerToken)
		fmt.Fprintf(w, "decode reads %s of weights per token: %.2f GB/s, %.0f%% of the copy kernel's %.2f GB/s\n",
			bytesize.Format(r.DecodeBytes), r.DecodeGBps, 100*r.DecodeGBps/r.CopyGBps, r.CopyGBps)
		if r.DeviceMsPerToken != nil {
			fmt.Fprintf(w, "per device per token:")
			for i, ms := range r.DeviceMsPerToken {
				fmt.Fprintf(w, " device %d %.3f ms;", i, ms)
			}
			fmt.Fprintf(w, " %s of hidden state carried between devices\n", bytesize.Format(uint64(r.HandOffBytesPerToken)))
		}
	}
	return nil
}

// deviceNames names the devices m runs on, in layer order.
func deviceNames(m *engine.Model) string {
	var names []string
	for _, d := range m.Devices() {
		names = append(names, d.Info().Name)
	}
	return strings.Join(names, " + ")
}

// benchPrompt returns n token ids of ordinary text, starting with BOS when
// the model adds one: the content does not change the work, only the count.
func benchPrompt(m *engine.Model, n int) []int32 {
	const text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. " +
		"One day, she saw a big red ball under a tall tree. She ran to get it, but a small dog took the ball and ran away. "
	ids := m.Tokenizer.Encode(text, true)
	body := m.Tokenizer.Encode(text, false)
	for len(ids) < n {
		ids = append(ids, body...)
	}
	return ids[:n]
}

// median of xs, 0 when empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
