package cli

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"headinfer/bytesize"
	"headinfer/engine"
	"headinfer/progress"
)

func benchContextCommand() *cli.Command {
	return &cli.Command{
		Name:  "context",
		Usage: "prefill and decode speed, device and host memory against context length, per KV offload mode",
		UsageText: "headinfer bench context (-m MODEL | --synth PRESET [--layers N]) --ctx 4096,32768 --offload none,head [--decode-attn gpu,cpu] [--kv-type f16,q8_0,q4_0] [--prefill N] [--csv F] [--md F] [--plot F.png]\n\n" +
			"For every context length and offload mode it loads the model with that --ctx-size, fills the context\n" +
			"and decodes --decode tokens at its end. With --prefill N only the last N prompt tokens are really\n" +
			"prefilled (timed); the positions before them get made-up keys and values (a real prefill's cost grows\n" +
			"with the square of the context). A mode that does not fit the budget gets a row saying so. --kv-type may\n" +
			"list KV types to compare, comma-separated.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "GGUF model file, or OWNER/REPO:QUANT on Hugging Face (pulled on first use)"},
			&cli.StringFlag{Name: "synth", Usage: "instead of -m, a synthetic model of this preset geometry (see headinfer synth)"},
			&cli.IntFlag{Name: "layers", Usage: "synthetic model: transformer blocks", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "vocab", Usage: "synthetic model: vocabulary size", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "ffn", Usage: "synthetic model: feed-forward size", DefaultText: "the preset's"},
			&cli.StringFlag{Name: "type", Value: "q8_0", Usage: "synthetic model: weight type, or a mixture (q4_k_m, q5_k_m) as in synth --type"},
			&cli.StringFlag{Name: "ctx", Value: "4096,16384", Usage: "context lengths, comma-separated (K = ×1024)"},
			&cli.StringFlag{Name: "offload", Value: "none,head", Usage: "offload modes to compare, comma-separated: auto, none, head"},
			&cli.StringFlag{Name: "decode-attn", Value: engine.DecodeAttnAuto, Usage: "decode attention placements of streamed heads to compare, comma-separated: auto, gpu, cpu (a mode that streams nothing runs once)"},
			chunkFlag(),
			&cli.IntFlag{Name: "prefill", Usage: "prompt tokens really prefilled at the end of the context (0 = all)"},
			&cli.IntFlag{Name: "decode", Value: 16, Usage: "tokens decoded after the prompt"},
			&cli.StringFlag{Name: "gpu-mem", Usage: "device memory budget for weights, activations and KV, e.g. 6GiB (default: what the device reports, less a margin)"},
			&cli.IntFlag{Name: "stream-block", Value: engine.DefaultStreamBlock, Usage: "KV positions a streamed head moves per copy, a multiple of 256"},
			&cli.BoolFlag{Name: "swa-full", Usage: "keep every position of the sliding-window layers instead of rings (as generate --swa-full)"},
			&cli.StringFlag{Name: "csv", Usage: "write the results as CSV to this file"},
			&cli.StringFlag{Name: "md", Usage: "write the results as a Markdown table to this file"},
			&cli.StringFlag{Name: "plot", Usage: "draw device memory and speed against context length into this PNG file"},
			deviceFlag(), devicesFlag(), splitFlag(),
		}, kvTypeFlags()...),
		Action: benchContext,
	}
}

// contextResult is one row of the context benchmark.
type contextResult struct {
	Ctx             int
	Offload         string
	DecodeAttn      string // the plan's placement (gpu or cpu)
	KVType          string // the plan's KV type ("q8_0", or "q8_0/q4_0" for keys and values apart)
	kvCompared      bool   // the run compared several KV types
	Chunk           int    // the plan's prefill chunk
	Resident        int
	Streamed        int
	Filled          int // positions given made-up KV
	PrefillTokens   int
	PrefillSeconds  float64
	DecodeTokens    int
	DecodeSeconds   float64
	DevicePeak      uint64
	DeviceKVPeak    uint64
	HostKV          uint64
	H2DPerToken     uint64 // decode: bytes copied to the device per token
	D2HPerToken     uint64
	PrefillCopyWait float64 // seconds
	DecodeCopyWait  float64
	// Per decode token: vkQueueSubmit calls, kernel dispatches and
	// command buffers; RecordSeconds is the time recording the decode
	// step took (once: it serves every position).
	SubmitsPerToken  float64
	DispatchPerToken float64
	CommandsPerToken float64
	RecordSeconds    float64
	HostWaitsPerTok  float64 // decode: host waits for the device per token
	CPUAttnSeconds   float64 // decode: time of the CPU's attention, all tokens
	H2DPerPrefillTok uint64  // prefill: bytes copied to the device per token
	Pipelined        bool
	Err              string
}

func (r contextResult) prefillRate() float64 { return rate(r.PrefillTokens, r.PrefillSeconds) }
func (r contextResult) decodeRate() float64  { return rate(r.DecodeTokens, r.DecodeSeconds) }

func benchContext(c *cli.Context) error {
	ctxs, err := parseCounts(c.String("ctx"))
	if err != nil {
		return fmt.Errorf("--ctx: %w", err)
	}
	modes := strings.Split(strings.ToLower(c.String("offload")), ",")
	for _, m := range modes {
		if m != engine.OffloadAuto && m != engine.OffloadNone && m != engine.OffloadHead {
			return fmt.Errorf("--offload: mode %q is not auto, none or head", m)
		}
	}
	var attns []string
	for _, a := range strings.Split(c.String("decode-attn"), ",") {
		m, err := parseDecodeAttn(a)
		if err != nil {
			return err
		}
		attns = append(attns, m)
	}
	if c.Int("decode") <= 0 || c.Int("prefill") < 0 {
		return fmt.Errorf("--decode must be positive, --prefill ≥ 0")
	}
	chunk, err := parseChunk(c.String("chunk"))
	if err != nil {
		return err
	}
	path, cleanup, err := benchModelPath(c)
	if err != nil {
		return err
	}
	defer cleanup()
	base := engine.Options{
		Device: c.String("device"), Chunk: chunk,
		StreamBlock: c.Int("stream-block"), SWAFull: c.Bool("swa-full"),
		Log: func(s string) { fmt.Fprintln(c.App.ErrWriter, s) },
	}
	kvTypeOptions(c, &base)
	if err := deviceOptions(c, &base); err != nil {
		return err
	}
	// --kv-type may list types to compare (f16,q8_0,q4_0); the per-half
	// overrides apply to each.
	kvs := strings.Split(base.KVType, ",")
	if s := c.String("gpu-mem"); s != "" {
		if base.GPUMem, err = bytesize.Parse(s); err != nil {
			return fmt.Errorf("--gpu-mem: %w", err)
		}
	}
	var results []contextResult
	bar := progress.New(barFile(c), int64(len(ctxs)*len(modes)*len(attns)*len(kvs)), progress.Options{Unit: "runs"})
	done := 0
	for _, n := range ctxs {
		for _, mode := range modes {
			for i, attn := range attns {
				for _, kv := range kvs {
					if mode == engine.OffloadNone && i > 0 {
						done++ // nothing streams: the placement changes nothing
						continue
					}
					opt := base
					opt.CtxSize, opt.Offload, opt.DecodeAttn, opt.KVType = n, mode, attn, strings.TrimSpace(kv)
					run := fmt.Sprintf("ctx %d, offload %s", n, mode)
					if len(attns) > 1 {
						run += ", decode attention " + attn
					}
					if len(kvs) > 1 {
						run += ", KV " + opt.KVType
					}
					bar.Describe(run)
					opt.Progress = func(p engine.Progress) { bar.Describe(run + ": " + workText(p)) }
					r := runContext(path, opt, c.Int("prefill"), c.Int("decode"))
					r.kvCompared = len(kvs) > 1
					bar.Clear()
					fmt.Fprintf(c.App.ErrWriter, "%s: %s\n", run, r.summary())
					results = append(results, r)
					done++
					bar.Set(int64(done))
				}
			}
		}
	}
	bar.Finish()
	md := contextMarkdown(results)
	fmt.Fprint(c.App.Writer, md)
	if p := c.String("md"); p != "" {
		if err := os.WriteFile(p, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if p := c.String("csv"); p != "" {
		if err := writeFile(p, func(w io.Writer) error { return contextCSV(w, results) }); err != nil {
			return err
		}
	}
	if p := c.String("plot"); p != "" {
		if err := writeFile(p, func(w io.Writer) error { return plotContext(w, results) }); err != nil {
			return err
		}
	}
	return nil
}

// benchModelPath is -m, or a synthetic model written to a temporary file.
func benchModelPath(c *cli.Context) (string, func(), error) {
	none := func() {}
	switch {
	case c.String("model") != "" && c.String("synth") != "":
		return "", none, fmt.Errorf("pass -m or --synth, not both")
	case c.String("model") != "":
		p, err := modelPath(c, c.String("model"))
		return p, none, err
	case c.String("synth") == "":
		return "", none, fmt.Errorf("no model: pass -m MODEL or --synth PRESET")
	}
	s, ok := engine.SynthPresets[c.String("synth")]
	if !ok {
		return "", none, fmt.Errorf("unknown preset %q", c.String("synth"))
	}
	for flag, dst := range map[string]*int{"layers": &s.Layers, "vocab": &s.Vocab, "ffn": &s.FFN} {
		if c.IsSet(flag) {
			*dst = c.Int(flag)
		}
	}
	t, mix, err := engine.ParseSynthType(c.String("type"))
	if err != nil {
		return "", none, err
	}
	s.Type, s.Mix, s.Seed = t, mix, 1
	dir, err := os.MkdirTemp("", "headinfer-bench")
	if err != nil {
		return "", none, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	path := filepath.Join(dir, "synth.gguf")
	if err := writeFile(path, func(w io.Writer) error { return engine.Synth(w, s) }); err != nil {
		cleanup()
		return "", none, err
	}
	return path, cleanup, nil
}

// runContext measures one context length and mode; a failure is reported
// in the row.
func runContext(path string, opt engine.Options, prefill, decode int) contextResult {
	r := contextResult{Ctx: opt.CtxSize, Offload: opt.Offload, DecodeAttn: opt.DecodeAttn}
	fail := func(err error) contextResult { r.Err = err.Error(); return r }
	m, err := engine.Load(path, opt)
	if err != nil {
		return fail(err)
	}
	defer m.Close()
	r.DecodeAttn, r.Chunk, r.KVType = m.Plan().DecodeAttn, m.Plan().Chunk, m.Plan().KVType
	se, err := m.NewSession()
	if err != nil {
		return fail(err)
	}
	defer se.Close()
	prompt := opt.CtxSize - decode
	if prompt <= 1 {
		return fail(fmt.Errorf("context %d leaves no room for a prompt before %d decoded tokens", opt.CtxSize, decode))
	}
	// Untimed warm-up: a two-token prefill and a decode step create every
	// pipeline the timed steps use (lavapipe compiles each on first use,
	// for seconds).
	if err := se.Prefill(context.Background(), []int32{1, 2}, false); err != nil {
		return fail(err)
	}
	rec := se.Stats().RecordTime
	if err := se.Decode(2, false); err != nil {
		return fail(err)
	}
	r.RecordSeconds = (se.Stats().RecordTime - rec).Seconds()
	se.Reset()
	warm := se.Stats()
	if prefill == 0 || prefill > prompt {
		prefill = prompt
	}
	if r.Filled = prompt - prefill; r.Filled > 0 {
		if err := se.FillSynthetic(r.Filled, 1); err != nil {
			return fail(err)
		}
	}
	rng := rand.New(rand.NewPCG(2, 3))
	ids := make([]int32, prefill)
	for i := range ids {
		ids[i] = int32(3 + rng.IntN(m.Config.Vocab-3))
	}
	if err := se.Prefill(context.Background(), ids, false); err != nil {
		return fail(err)
	}
	before := se.Stats()
	pre := before.Sub(warm)
	r.PrefillTokens, r.PrefillSeconds, r.PrefillCopyWait = pre.PrefillTokens, pre.Prefill.Seconds(), pre.CopyWait.Seconds()
	r.H2DPerPrefillTok = pre.H2DBytes / uint64(max(1, pre.PrefillTokens))
	for i := 0; i < decode; i++ {
		id, err := se.Argmax()
		if err != nil {
			return fail(err)
		}
		if err := se.Decode(id, false); err != nil {
			return fail(err)
		}
	}
	dec := se.Stats().Sub(before)
	r.DecodeTokens, r.DecodeSeconds, r.DecodeCopyWait = dec.DecodeTokens, dec.Decode.Seconds(), dec.CopyWait.Seconds()
	r.H2DPerToken = dec.H2DBytes / uint64(decode)
	r.D2HPerToken = dec.D2HBytes / uint64(decode)
	r.SubmitsPerToken = float64(dec.Submissions) / float64(decode)
	r.DispatchPerToken = float64(dec.Dispatches) / float64(decode)
	r.CommandsPerToken = float64(dec.Commands) / float64(decode)
	r.HostWaitsPerTok = float64(dec.HostWaits) / float64(decode)
	r.CPUAttnSeconds = dec.CPUAttention.Seconds()
	r.Pipelined = os.Getenv(engine.PipelineEnv) == "1"
	mem := se.Memory()
	r.Resident, r.Streamed = mem.ResidentSlots, mem.StreamedSlots
	r.DevicePeak, r.DeviceKVPeak, r.HostKV = mem.DeviceBytesPeak, mem.DeviceKVBytesPeak, mem.HostKVBytes
	return r
}

func (r contextResult) summary() string {
	if r.Err != "" {
		return "error: " + r.Err
	}
	return fmt.Sprintf("prefill %d tokens %.1f tok/s, decode %.2f tok/s, device peak %s (KV %s), host KV %s",
		r.PrefillTokens, r.prefillRate(), r.decodeRate(), bytesize.Format(r.DevicePeak), bytesize.Format(r.DeviceKVPeak), bytesize.Format(r.HostKV))
}

// contextMarkdown is the results as a Markdown table.
func contextMarkdown(rs []contextResult) string {
	var b strings.Builder
	b.WriteString("| context | offload | decode attn | KV | resident/streamed slots | filled | chunk | prefill tokens | prefill s | prefill tok/s | decode tok/s | device peak | device KV peak | host KV | H2D per decode token | D2H per decode token | copy wait prefill / decode s | submissions / dispatches / command buffers / host waits per decode token | CPU attention s | decode step recorded in |\n")
	b.WriteString("| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rs {
		if r.Err != "" {
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s ||||||||||||||||\n", r.Ctx, r.Offload, r.DecodeAttn, r.KVType, strings.ReplaceAll(r.Err, "|", "/"))
			continue
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %d/%d | %d | %d | %d | %.2f | %.1f | %.3f | %s | %s | %s | %s | %s | %.2f / %.2f | %.0f / %.0f / %.0f / %.0f | %.2f | %.0f ms |\n",
			r.Ctx, r.Offload, r.DecodeAttn, r.KVType, r.Resident, r.Streamed, r.Filled, r.Chunk, r.PrefillTokens, r.PrefillSeconds, r.prefillRate(), r.decodeRate(),
			bytesize.Format(r.DevicePeak), bytesize.Format(r.DeviceKVPeak), bytesize.Format(r.HostKV), bytesize.Format(r.H2DPerToken), bytesize.Format(r.D2HPerToken),
			r.PrefillCopyWait, r.DecodeCopyWait, r.SubmitsPerToken, r.DispatchPerToken, r.CommandsPerToken, r.HostWaitsPerTok,
			r.CPUAttnSeconds, 1000*r.RecordSeconds)
	}
	return b.String()
}

// contextCSV writes the results as CSV, bytes and seconds unformatted.
func contextCSV(w io.Writer, rs []contextResult) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"ctx", "offload", "decode_attn", "resident_slots", "streamed_slots", "filled", "prefill_tokens", "prefill_s", "prefill_tok_s",
		"decode_tokens", "decode_s", "decode_tok_s", "device_bytes_peak", "device_kv_bytes_peak", "host_kv_bytes",
		"h2d_bytes_per_decode_token", "d2h_bytes_per_decode_token", "prefill_copy_wait_s", "decode_copy_wait_s",
		"submissions_per_decode_token", "dispatches_per_decode_token", "command_buffers_per_decode_token", "decode_record_s",
		"h2d_bytes_per_prefill_token", "pipelined", "host_waits_per_decode_token", "decode_cpu_attention_s", "chunk", "error", "kv_type"})
	for _, r := range rs {
		u := func(v uint64) string { return strconv.FormatUint(v, 10) }
		f := func(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }
		cw.Write([]string{strconv.Itoa(r.Ctx), r.Offload, r.DecodeAttn, strconv.Itoa(r.Resident), strconv.Itoa(r.Streamed), strconv.Itoa(r.Filled),
			strconv.Itoa(r.PrefillTokens), f(r.PrefillSeconds), f(r.prefillRate()),
			strconv.Itoa(r.DecodeTokens), f(r.DecodeSeconds), f(r.decodeRate()), u(r.DevicePeak), u(r.DeviceKVPeak), u(r.HostKV),
			u(r.H2DPerToken), u(r.D2HPerToken), f(r.PrefillCopyWait), f(r.DecodeCopyWait),
			f(r.SubmitsPerToken), f(r.DispatchPerToken), f(r.CommandsPerToken), f(r.RecordSeconds),
			u(r.H2DPerPrefillTok), strconv.FormatBool(r.Pipelined), f(r.HostWaitsPerTok), f(r.CPUAttnSeconds), strconv.Itoa(r.Chunk), r.Err, r.KVType})
	}
	cw.Flush()
	return cw.Error()
}

// parseCounts reads a comma-separated list of positive counts; a K suffix
// multiplies by 1024, M by 1024².
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mul := 1
		switch {
		case strings.HasSuffix(strings.ToUpper(f), "K"):
			mul, f = 1<<10, f[:len(f)-1]
		case strings.HasSuffix(strings.ToUpper(f), "M"):
			mul, f = 1<<20, f[:len(f)-1]
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n*mul)
	}
	return out, nil
}

// writeFile creates path and writes it through a buffer with fill.
func writeFile(path string, fill func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = fill(w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
