package cli

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"headinfer/bytesize"
	"headinfer/engine"
	"headinfer/engine/grammar"
	"headinfer/engine/sample"
	"headinfer/engine/tokenizer"
)

// modelFlags are the flags of every command that loads a model.
func modelFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "GGUF model file, or OWNER/REPO:QUANT on Hugging Face (pulled on first use, see headinfer pull)", Required: true},
		&cli.IntFlag{Name: "ctx-size", Aliases: []string{"c"}, Usage: "context size in tokens (0 = the model's training context, at most 4096)"},
		chunkFlag(),
		deviceFlag(),
	}, append(kvTypeFlags(), offloadFlags()...)...)
}

// kvTypeFlags are --kv-type and the per-half overrides, spelled also as
// llama.cpp spells them (--cache-type-k, -ctk).
func kvTypeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "kv-type", Value: "f16", Usage: "KV cache element type of keys and values: f16, f32, q8_0 or q4_0 (q8_0 and q4_0 need a head size that is a multiple of 32)"},
		&cli.StringFlag{Name: "kv-type-k", Aliases: []string{"cache-type-k", "ctk"}, Usage: "the keys' KV cache type, overriding --kv-type"},
		&cli.StringFlag{Name: "kv-type-v", Aliases: []string{"cache-type-v", "ctv"}, Usage: "the values' KV cache type, overriding --kv-type"},
	}
}

// kvTypeOptions reads the KV type flags into opt.
func kvTypeOptions(c *cli.Context, opt *engine.Options) {
	opt.KVType = strings.ToLower(c.String("kv-type"))
	opt.KVTypeK = strings.ToLower(c.String("kv-type-k"))
	opt.KVTypeV = strings.ToLower(c.String("kv-type-v"))
}

// modelOptions reads the model flags.
func modelOptions(c *cli.Context) (engine.Options, error) {
	if c.Int("ctx-size") < 0 {
		return engine.Options{}, fmt.Errorf("--ctx-size must be ≥ 0")
	}
	chunk, err := parseChunk(c.String("chunk"))
	if err != nil {
		return engine.Options{}, err
	}
	opt := engine.Options{
		Device:  c.String("device"),
		CtxSize: c.Int("ctx-size"),
		Chunk:   chunk,
		// Commands without --parallel run one sequence (0).
		Parallel: c.Int("parallel"),
		Log:      func(s string) { fmt.Fprintln(c.App.ErrWriter, s) },
	}
	kvTypeOptions(c, &opt)
	return opt, offloadOptions(c, &opt)
}

// parallelFlag is --parallel: sequences run at once, each with its own
// KV cache of --ctx-size positions.
func parallelFlag(value int) cli.Flag {
	return &cli.IntFlag{Name: "parallel", Aliases: []string{"np"}, Value: value,
		Usage: "sequences decoded at once (continuous batching), each with its own KV cache of --ctx-size positions; the memory plan budgets them all"}
}

// chunkFlag is --chunk: prompt tokens per forward pass, or auto.
func chunkFlag() cli.Flag {
	return &cli.StringFlag{Name: "chunk", Value: "auto", Usage: "prompt tokens per forward pass, or auto: 512 when the KV cache is resident, else sized so that prefill over streamed KV is compute-bound, within the budget (headinfer plan says why)"}
}

// parseChunk reads --chunk: a positive count, or auto (0).
func parseChunk(s string) (int, error) {
	if strings.EqualFold(s, "auto") {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("--chunk %q: use a positive number of tokens or auto", s)
	}
	return n, nil
}

// loadModel loads the model file at path (see modelPath) with the model
// flags, with a progress bar on a terminal for the weight upload and,
// when prefillBars is set, for prefills of more than one chunk.
func loadModel(c *cli.Context, path string, prefillBars bool) (*engine.Model, error) {
	opt, err := modelOptions(c)
	if err != nil {
		return nil, err
	}
	return loadWithBars(c, path, opt, prefillBars)
}

// loadWithBars loads path with opt and the progress bars of loadModel.
func loadWithBars(c *cli.Context, path string, opt engine.Options, prefillBars bool) (*engine.Model, error) {
	bars := &engineBars{f: barFile(c), prefill: prefillBars}
	opt.Progress = bars.report
	m, err := engine.Load(path, opt)
	if err != nil {
		bars.stop()
		return nil, err
	}
	bars.done()
	return m, nil
}

func samplingFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Float64Flag{Name: "temp", Value: 0.8, Usage: "sampling temperature; 0 = greedy (argmax on the device; on the host under --grammar or --json-schema)"},
		&cli.IntFlag{Name: "top-k", Value: 40, Usage: "sample among the k most likely tokens (0 = all)"},
		&cli.Float64Flag{Name: "top-p", Value: 0.95, Usage: "sample among the most likely tokens whose probabilities add up to p (1 = all)"},
		&cli.Float64Flag{Name: "min-p", Value: 0.05, Usage: "drop tokens less likely than p × the most likely one (0 = none)"},
		&cli.Float64Flag{Name: "repeat-penalty", Value: 1.0, Usage: "penalise the last 64 tokens by this factor (1 = off)"},
		&cli.Float64Flag{Name: "presence-penalty", Usage: "subtract this from the logit of each token among the last 64 (0 = off)"},
		&cli.Float64Flag{Name: "frequency-penalty", Usage: "subtract this times its count among the last 64 from a token's logit (0 = off)"},
		&cli.Uint64Flag{Name: "seed", Usage: "random seed (0 = a random one)"},
	}
}

func samplingParams(c *cli.Context) sample.Params {
	seed := c.Uint64("seed")
	if seed == 0 {
		seed = randomSeed()
	}
	return sample.Params{
		Temperature:      float32(c.Float64("temp")),
		TopK:             c.Int("top-k"),
		TopP:             float32(c.Float64("top-p")),
		MinP:             float32(c.Float64("min-p")),
		RepeatPenalty:    float32(c.Float64("repeat-penalty")),
		PresencePenalty:  float32(c.Float64("presence-penalty")),
		FrequencyPenalty: float32(c.Float64("frequency-penalty")),
		RepeatLastN:      64,
		Seed:             seed,
	}
}

func generateCommand() *cli.Command {
	flags := append(modelFlags(), samplingFlags()...)
	flags = append(flags,
		&cli.StringFlag{Name: "prompt", Aliases: []string{"p"}, Usage: "prompt text"},
		&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read the prompt from this file"},
		&cli.BoolFlag{Name: "no-special", Usage: "read control tokens written in the prompt (\"</s>\", \"<|eot_id|>\") as plain text"},
		&cli.IntFlag{Name: "n", Value: 128, Usage: "tokens to generate at most"},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON object (ids, text, timings, memory) instead of streaming text"},
		&cli.StringFlag{Name: "logits-out", Usage: "write the logits before every generated token to this file (float32 little-endian, tokens × vocab)"},
		&cli.StringFlag{Name: "prompt-cache", Usage: "KV snapshot `FILE`: when it holds a prefix of this prompt for this model, load it and prefill only the rest; afterwards save the prompt's KV there"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "print the memory plan and KV traffic to stderr"},
	)
	flags = append(flags, grammarFlags()...)
	flags = append(flags, windowFlags()...)
	return &cli.Command{
		Name:      "generate",
		Usage:     "generate text from a prompt",
		UsageText: "headinfer generate -m MODEL -p PROMPT [-n N] [--temp T] ...",
		Flags:     flags,
		Action:    generate,
	}
}

// generateResult is the --json output.
type generateResult struct {
	PromptIDs []int32       `json:"prompt_ids"`
	IDs       []int32       `json:"ids"`
	Text      string        `json:"text"`
	Finish    string        `json:"finish_reason"`
	Timings   timings       `json:"timings"`
	Memory    engine.Memory `json:"memory"`
	// DecodeAttn is where decode attended the streamed KV heads (gpu or
	// cpu; engine.Plan.DecodeAttn).
	DecodeAttn string `json:"decode_attn"`
}

type timings struct {
	PrefillTokens int     `json:"prefill_tokens"`
	CachedTokens  int     `json:"cached_tokens"` // prompt tokens whose KV came from --prompt-cache
	PrefillMS     float64 `json:"prefill_ms"`
	DecodeTokens  int     `json:"decode_tokens"`
	DecodeMS      float64 `json:"decode_ms"`
	// Streamed KV: bytes copied host → device and written device → host,
	// and an upper bound on the time the compute queue waited for copies
	// (engine.Stats.CopyWait).
	H2DBytes   uint64  `json:"h2d_bytes"`
	D2HBytes   uint64  `json:"d2h_bytes"`
	CopyWaitMS float64 `json:"copy_wait_ms"`
	// Work handed to the device: kernel dispatches, command buffers
	// submitted, and host waits (one per forward pass, and one per layer
	// more in a decode step whose streamed heads attend on the CPU, which
	// took CPUAttentionMS).
	Dispatches     int     `json:"dispatches"`
	Submissions    int     `json:"submissions"`
	HostWaits      int     `json:"host_waits"`
	CPUAttentionMS float64 `json:"cpu_attention_ms"`
	// Per decode step: vkQueueSubmit calls and kernel dispatches (they
	// do not grow with the context); command buffers submitted over all
	// steps; steps recorded and the time that took.
	SubmissionsPerDecodeStep float64 `json:"submissions_per_decode_step"`
	DispatchesPerDecodeStep  float64 `json:"dispatches_per_decode_step"`
	CommandBuffers           int     `json:"command_buffers"`
	Recordings               int     `json:"recordings"`
	RecordMS                 float64 `json:"record_ms"`
}

func generate(c *cli.Context) error {
	prompt := c.String("prompt")
	if f := c.String("file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		prompt = string(b)
	}
	if prompt == "" {
		return fmt.Errorf("no prompt: pass -p TEXT or -f FILE")
	}
	if c.Int("n") <= 0 {
		return fmt.Errorf("-n must be positive")
	}
	params := samplingParams(c)
	if err := params.Validate(); err != nil {
		return err
	}
	g, err := grammarOf(c)
	if err != nil {
		return err
	}
	return withWindow(c, "generate", false, func(lv liveView) error { return generateText(c, lv, prompt, params, g) })
}

// generateText loads the model and generates, showing the run in lv;
// under grammar g when it is not nil.
func generateText(c *cli.Context, lv liveView, prompt string, params sample.Params, g *grammar.Grammar) error {
	path, err := modelPath(c, c.String("model"))
	if err != nil {
		return err
	}
	m, err := lv.loadModel(c, path, true)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.CanGenerate(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if c.Bool("verbose") {
		fmt.Fprint(c.App.ErrWriter, m.Plan())
	}
	se, err := m.NewSession()
	if err != nil {
		return err
	}
	defer se.Close()

	// The operator writes the prompt, so control tokens in it are meant,
	// unlike in text that comes from a server request.
	ids := m.Tokenizer.EncodeSpecial(prompt, true)
	if c.Bool("no-special") {
		ids = m.Tokenizer.Encode(prompt, true)
	}
	if len(ids)+1 > se.CtxSize() {
		return fmt.Errorf("the prompt is %d tokens, the context holds %d: pass a larger --ctx-size or a shorter prompt", len(ids), se.CtxSize())
	}
	gp := engine.GenerateParams{MaxTokens: min(c.Int("n"), se.CtxSize()-len(ids)), Sampling: params}
	if g != nil {
		gp.Constraint = grammar.NewMatcher(g, grammar.VocabOf(m.Tokenizer))
	}
	var logitsOut *bufio.Writer
	if p := c.String("logits-out"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer f.Close()
		logitsOut = bufio.NewWriter(f)
		var werr error
		buf := make([]byte, 4*m.Config.Vocab)
		gp.Logits = func(_ int, logits []float32) {
			for i, v := range logits {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
			if _, err := logitsOut.Write(buf); err != nil && werr == nil {
				werr = err
			}
		}
		defer func() {
			if err := logitsOut.Flush(); err != nil || werr != nil {
				fmt.Fprintln(c.App.ErrWriter, "headinfer: writing --logits-out:", errors.Join(werr, err))
			}
		}()
	}

	cache := promptCache{path: c.String("prompt-cache"), log: c.App.ErrWriter}
	cached := cache.load(m, se, ids)

	ctx, stop := signal.NotifyContext(lv.ctx, os.Interrupt)
	defer stop()
	dec := tokenizer.NewDecoder(m.Tokenizer)
	for _, id := range ids {
		dec.Add(id) // so that the first generated token's spacing is right
	}
	var out []int32
	var text strings.Builder
	w := bufio.NewWriter(c.App.Writer)
	asJSON := c.Bool("json")
	finish, err := se.Generate(ctx, ids[cached:], gp, func(id int32) bool {
		out = append(out, id)
		s := dec.Add(id)
		text.WriteString(s)
		lv.text(s)
		if !asJSON {
			w.WriteString(s)
			w.Flush()
		}
		return true
	})
	tail := dec.Flush()
	text.WriteString(tail)
	lv.text(tail)
	if err != nil && errors.Is(err, context.Canceled) && lv.ctx.Err() != nil {
		err, finish = nil, engine.FinishStop // the window was closed: a clean end
	}
	if err != nil {
		return err
	}
	cache.save(m, se, len(ids), cached)
	st := se.Stats()
	if asJSON {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetEscapeHTML(false)
		return enc.Encode(generateResult{
			PromptIDs: ids, IDs: out, Text: text.String(), Finish: string(finish),
			Timings: timings{
				PrefillTokens: st.PrefillTokens, CachedTokens: cached, PrefillMS: ms(st.Prefill.Seconds()),
				DecodeTokens: st.DecodeTokens, DecodeMS: ms(st.Decode.Seconds()),
				H2DBytes: st.H2DBytes, D2HBytes: st.D2HBytes, CopyWaitMS: ms(st.CopyWait.Seconds()),
				Dispatches: st.Dispatches, Submissions: st.Submissions, HostWaits: st.HostWaits,
				CPUAttentionMS:           ms(st.CPUAttention.Seconds()),
				SubmissionsPerDecodeStep: perStep(st.DecodeSubmissions, st.DecodeTokens),
				DispatchesPerDecodeStep:  perStep(st.DecodeDispatches, st.DecodeTokens),
				CommandBuffers:           st.Commands, Recordings: st.Recordings, RecordMS: ms(st.RecordTime.Seconds()),
			},
			Memory:     se.Memory(),
			DecodeAttn: m.Plan().DecodeAttn,
		})
	}
	w.WriteString(tail + "\n")
	w.Flush()
	mem := se.Memory()
	fmt.Fprintf(c.App.ErrWriter, "prefill: %d tokens in %.1f ms (%.1f tok/s); decode: %d tokens in %.1f ms (%.1f tok/s); device memory %s (peak %s)\n",
		st.PrefillTokens, ms(st.Prefill.Seconds()), rate(st.PrefillTokens, st.Prefill.Seconds()),
		st.DecodeTokens, ms(st.Decode.Seconds()), rate(st.DecodeTokens, st.Decode.Seconds()),
		bytesize.Format(mem.DeviceBytes), bytesize.Format(mem.DeviceBytesPeak))
	if c.Bool("verbose") {
		fmt.Fprintf(c.App.ErrWriter, "KV: %d slots resident, %d streamed; device KV %s, host KV %s; copied %s to the device, %s to the host; copy wait ≤ %.1f ms\n",
			mem.ResidentSlots, mem.StreamedSlots, bytesize.Format(mem.DeviceKVBytesPeak), bytesize.Format(mem.HostKVBytes),
			bytesize.Format(st.H2DBytes), bytesize.Format(st.D2HBytes), ms(st.CopyWait.Seconds()))
	}
	return nil
}

// perStep is n per step, or 0 without steps.
func perStep(n, steps int) float64 {
	if steps == 0 {
		return 0
	}
	return float64(n) / float64(steps)
}

func ms(s float64) float64 { return math.Round(s*1e6) / 1e3 }

func rate(n int, s float64) float64 {
	if s <= 0 {
		return 0
	}
	return float64(n) / s
}

// randomSeed picks a seed when the user gave none.
func randomSeed() uint64 { return rand.Uint64() | 1 }
