package cli

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"headinfer/engine"
	"headinfer/server"
)

func serveCommand() *cli.Command {
	flags := append(modelFlags(),
		&cli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "address to listen on (0.0.0.0 for every interface)"},
		&cli.IntFlag{Name: "port", Value: 8080, Usage: "TCP port (0 = any free one; the address is logged)"},
		&cli.StringFlag{Name: "api-key", Usage: "require \"Authorization: Bearer KEY\" on every route but GET /health (401 without it)", EnvVars: []string{"HEADINFER_API_KEY"}},
		&cli.BoolFlag{Name: "metrics-public", Usage: "serve GET /metrics without the --api-key, for a Prometheus scraper on a private network"},
		parallelFlag(server.DefaultParallel),
		&cli.IntFlag{Name: "max-queue", Value: server.DefaultMaxQueue, Usage: "requests that may wait while --parallel run; more are answered 429"},
		&cli.DurationFlag{Name: "timeout", Value: server.DefaultTimeout, Usage: "longest a request may take, waiting in the queue included"},
		&cli.DurationFlag{Name: "read-timeout", Value: server.DefaultReadTimeout, Usage: "longest a request's headers may take to arrive (the connection is then closed), and then its body (answered 408); generation is not bounded by it"},
		&cli.DurationFlag{Name: "idle-timeout", Value: server.DefaultIdleTimeout, Usage: "how long a kept-alive connection may wait for its next request"},
		&cli.IntFlag{Name: "max-conns-per-ip", Value: server.DefaultMaxConnsPerIP, Usage: "connections one client address may hold open at once; more are answered 429 and closed (0 = no cap; behind a reverse proxy every client is the proxy's address)"},
		&cli.StringFlag{Name: "kv-cache-dir", Aliases: []string{"slot-save-path"}, Usage: "`DIR` for KV snapshots: sequences evicted by a request with another prompt are spilled there and restored when a later prompt begins with them; POST /slots/{id}?action=save|restore keeps its files there"},
		&cli.DurationFlag{Name: "grace", Value: server.DefaultGrace, Usage: "on SIGINT/SIGTERM, how long running requests may finish before they are cancelled"},
		&cli.StringFlag{Name: "reasoning-format", Value: server.ReasoningDeepSeek, Usage: "for a model whose chat template writes <think> blocks: deepseek sends the block as reasoning_content apart from content; none leaves the text as generated"},
		&cli.BoolFlag{Name: "reload-on-failure", Usage: "when the device fails, load the model again once before answering 503 for good"},
		&cli.IntFlag{Name: "agent-port", Usage: "also answer HAProxy's agent-check on this TCP port: \"up ready N%\" (the weight in proportion to the free places), \"up drain\" once shutting down, \"down\" while loading or after a device failure (0 = off)"},
		&cli.BoolFlag{Name: "embeddings", Aliases: []string{"embedding"}, Usage: "serve POST /v1/embeddings and /embedding (each input's final hidden states pooled as the model says, mean when it says none, and L2-normalised); without it they answer 501"},
	)
	flags = append(flags, llamaServerFlags()...)
	flags = append(flags, windowFlags()...)
	return &cli.Command{
		Name:  "serve",
		Usage: "serve an OpenAI-compatible HTTP API",
		UsageText: "headinfer serve -m MODEL [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--parallel N] [--max-queue N] [-c CTX] [--gpu-mem SIZE] [--device D]\n\n" +
			"POST /v1/completions, POST /v1/chat/completions (stream: true for server-sent events),\n" +
			"POST /v1/embeddings and /embedding (with --embeddings), POST /tokenize, /detokenize, GET /props,\n" +
			"GET /v1/models, GET /health, GET /metrics, POST /slots/{id}?action=save|restore (with --kv-cache-dir).\n" +
			"Up to --parallel requests run at once, their decode steps batched (one read of the weights for all);\n" +
			"the others wait in order. A finished sequence's KV stays in its slot until the slot is needed: a prompt\n" +
			"that begins with the tokens a slot holds reuses their KV.",
		Flags:  flags,
		Action: serve,
	}
}

// llamaServerFlags are llama-server's spellings of what a user of it
// passes: the model's name, more keys, the slots route, the pooling, the
// sampling defaults of requests that leave them out, and flags that
// mean nothing here, accepted with a line in the log that says why.
func llamaServerFlags() []cli.Flag {
	const compat, sampling = "llama-server compatibility", "sampling defaults (for requests that leave them out)"
	flags := []cli.Flag{
		&cli.StringFlag{Name: "alias", Aliases: []string{"a"}, Category: compat, Usage: "the model's name in the API (default: the file name without .gguf)"},
		&cli.StringFlag{Name: "api-key-file", Category: compat, Usage: "a file of API keys, one per line, any of which a request may carry (beside --api-key)"},
		&cli.BoolFlag{Name: "no-slots", Category: compat, Usage: "answer GET /slots 501"},
		&cli.BoolFlag{Name: "no-webui", Category: compat, Usage: "do not serve the chat page at GET /"},
		&cli.BoolFlag{Name: "props", Category: compat, Usage: "answer POST /props with {\"success\": true}, as llama-server does (it changes nothing); without it, 403"},
		&cli.BoolFlag{Name: "slots", Category: compat, Usage: "serve GET /slots (the default)"},
		&cli.StringFlag{Name: "chat-template", Category: compat, Usage: "render chat prompts with this built-in template instead of the model's: " + strings.Join(server.BuiltinTemplates(), ", ")},
		&cli.StringFlag{Name: "chat-template-file", Category: compat, Usage: "render chat prompts with the Jinja template in this file instead of the model's"},
		&cli.BoolFlag{Name: "context-shift", Category: compat, Usage: "when a sequence fills the context, keep its first n_keep tokens (the request's; BOS always) and drop half of the rest, turning the kept keys to their new positions, and go on; a prompt longer than the context is cut the same way instead of refused (sliding-window models need --swa-full)"},
		&cli.BoolFlag{Name: "no-context-shift", Category: compat, Usage: "end generation when the context is full, answering truncated: true (the default)"},
		&cli.StringFlag{Name: "pooling", Category: compat, Usage: "embeddings' pooling: mean, cls, last, or none (a vector per token, on /embedding only) (default: the model's pooling_type, mean when it has none)"},
		&cli.IntFlag{Name: "n-predict", Aliases: []string{"n"}, Value: -1, Category: sampling, Usage: "tokens to generate (-1: up to the end of the context; with --context-shift, one context's worth)"},
		&cli.Float64Flag{Name: "temp", Category: sampling, DefaultText: "the route's", Usage: "temperature (default: OpenAI's 1 on /v1 routes, llama.cpp's 0.8 on /completion)"},
		&cli.IntFlag{Name: "top-k", Category: sampling, DefaultText: "the route's", Usage: "top-k (0: all)"},
		&cli.Float64Flag{Name: "top-p", Category: sampling, DefaultText: "the route's", Usage: "top-p"},
		&cli.Float64Flag{Name: "min-p", Category: sampling, DefaultText: "the route's", Usage: "min-p"},
		&cli.Float64Flag{Name: "repeat-penalty", Category: sampling, DefaultText: "the route's", Usage: "repetition penalty over the last 64 tokens (1: off)"},
		&cli.Int64Flag{Name: "seed", Aliases: []string{"s"}, Value: -1, Category: sampling, Usage: "sampling seed (-1: a random one per request)"},
	}
	for _, f := range ignoredFlags {
		usage := "accepted and ignored: " + f.why
		if f.value {
			flags = append(flags, &cli.StringFlag{Name: f.names[0], Aliases: f.names[1:], Category: compat, Usage: usage})
		} else {
			flags = append(flags, &cli.BoolFlag{Name: f.names[0], Aliases: f.names[1:], Category: compat, Usage: usage})
		}
	}
	return flags
}

// ignoredFlags are llama-server flags that mean nothing here.
var ignoredFlags = []struct {
	names []string
	value bool // takes a value
	why   string
}{
	{[]string{"n-gpu-layers", "ngl", "gpu-layers"}, true, "every layer runs on the device; the memory plan (--gpu-mem, --offload) decides where KV lives"},
	{[]string{"threads", "t"}, true, "the device does the work; CPU decode attention sizes its own thread pool"},
	{[]string{"threads-batch", "tb"}, true, "the device does the work"},
	{[]string{"batch-size", "b"}, true, "prompts are prefilled in chunks of --chunk tokens"},
	{[]string{"ubatch-size", "ub"}, true, "prompts are prefilled in chunks of --chunk tokens"},
	{[]string{"flash-attn", "fa"}, false, "attention is always computed block by block, without the full score matrix"},
	{[]string{"mlock"}, false, "the weights live in device memory; the file is mapped, not read"},
	{[]string{"no-mmap"}, false, "the file is always mapped"},
	{[]string{"cont-batching", "cb"}, false, "continuous batching is always on"},
	{[]string{"metrics"}, false, "GET /metrics is always served"},
	{[]string{"jinja"}, false, "chat templates are always rendered with Jinja"},
}

func serve(c *cli.Context) error {
	if c.Int("max-queue") < 0 || c.Int("parallel") < 1 || c.Duration("timeout") <= 0 || c.Duration("grace") < 0 {
		return fmt.Errorf("--max-queue must be ≥ 0, --parallel ≥ 1, --timeout > 0 and --grace ≥ 0")
	}
	if c.Duration("read-timeout") <= 0 || c.Duration("idle-timeout") <= 0 || c.Int("max-conns-per-ip") < 0 {
		return fmt.Errorf("--read-timeout and --idle-timeout must be > 0, --max-conns-per-ip ≥ 0")
	}
	if f := c.String("reasoning-format"); f != server.ReasoningDeepSeek && f != server.ReasoningNone {
		return fmt.Errorf("--reasoning-format must be %s or %s, not %q", server.ReasoningDeepSeek, server.ReasoningNone, f)
	}
	if p := c.Int("port"); p < 0 || p > 65535 {
		return fmt.Errorf("--port %d is not a TCP port", p)
	}
	return withWindow(c, "serve", true, func(lv liveView) error { return serveWith(c, lv) })
}

// serveWith serves until a signal, or until the window closes.
func serveWith(c *cli.Context, lv liveView) error {
	path, err := modelPath(c, c.String("model"))
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
	keys, err := apiKeyFile(c.String("api-key-file"))
	if err != nil {
		return err
	}
	pooling, err := poolingFlag(c.String("pooling"))
	if err != nil {
		return err
	}
	for _, f := range ignoredFlags {
		if c.IsSet(f.names[0]) {
			log.Info("ignoring a llama-server flag", "flag", "--"+f.names[0], "why", f.why)
		}
	}
	tmpl, err := chatTemplateFlags(c)
	if err != nil {
		return err
	}
	defaults := requestDefaults(c)
	if err := defaults.Check(); err != nil {
		return fmt.Errorf("sampling defaults: %w", err)
	}
	s := server.New(server.Options{
		ModelPath:     path,
		Alias:         c.String("alias"),
		APIKey:        c.String("api-key"),
		APIKeys:       keys,
		NoSlots:       c.Bool("no-slots"),
		ContextShift:  c.Bool("context-shift") && !c.Bool("no-context-shift"),
		NoWebUI:       c.Bool("no-webui"),
		Props:         c.Bool("props"),
		ChatTemplate:  tmpl,
		Defaults:      defaults,
		MetricsPublic: c.Bool("metrics-public"),
		Parallel:      c.Int("parallel"),
		MaxQueue:      c.Int("max-queue"),
		Timeout:       c.Duration("timeout"),
		ReadTimeout:   c.Duration("read-timeout"),
		IdleTimeout:   c.Duration("idle-timeout"),
		MaxConnsPerIP: maxConnsPerIP(c.Int("max-conns-per-ip")),
		KVCacheDir:    c.String("kv-cache-dir"),
		Embeddings:    c.Bool("embeddings"),
		Logger:        log,

		ReloadOnFailure: c.Bool("reload-on-failure"),
		ReasoningFormat: c.String("reasoning-format"),
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(c.String("host"), strconv.Itoa(c.Int("port"))))
	if err != nil {
		return err
	}
	log.Info("listening", "addr", ln.Addr().String(), "model", s.ModelName())
	if p := c.Int("agent-port"); p != 0 {
		aln, err := net.Listen("tcp", net.JoinHostPort(c.String("host"), strconv.Itoa(p)))
		if err != nil {
			ln.Close()
			return fmt.Errorf("--agent-port: %w", err)
		}
		defer aln.Close()
		go func() {
			if err := s.ServeAgent(aln); err != nil {
				log.Error("agent check listener", "err", err)
			}
		}()
		log.Info("answering HAProxy agent checks", "addr", aln.Addr().String())
	}
	status := func() []string {
		waiting, running := s.Queue()
		return []string{fmt.Sprintf("listening on %s: %d of %d sequences running, %d waiting (at most %d)",
			ln.Addr(), running, c.Int("parallel"), waiting, c.Int("max-queue"))}
	}
	lv.status.Store(&status)

	// Closing the window ends lv.ctx: the server stops as on SIGINT.
	ctx, stop := signal.NotifyContext(lv.ctx, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	return s.Serve(ctx, ln, c.Duration("grace"), func() (*engine.Model, error) {
		m, err := lv.loadModel(c, path, false)
		if err == nil && !c.Bool("embeddings") {
			// Every route but the embeddings' generates: refuse now, not
			// on each request.
			if gerr := m.CanGenerate(); gerr != nil {
				m.Close()
				return nil, fmt.Errorf("%s: %w", path, gerr)
			}
		}
		if err == nil && pooling != nil {
			m.Config.Pooling = *pooling
		}
		return m, err
	})
}

// apiKeyFile reads --api-key-file: one key per line; blank lines and
// lines starting with # are skipped.
func apiKeyFile(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--api-key-file: %w", err)
	}
	var keys []string
	for _, line := range strings.Split(string(b), "\n") {
		if k := strings.TrimSpace(line); k != "" && !strings.HasPrefix(k, "#") {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("--api-key-file %s holds no key", path)
	}
	return keys, nil
}

// chatTemplateFlags reads --chat-template NAME or --chat-template-file;
// "" keeps the model's template.
func chatTemplateFlags(c *cli.Context) (string, error) {
	name, file := c.String("chat-template"), c.String("chat-template-file")
	switch {
	case name != "" && file != "":
		return "", fmt.Errorf("--chat-template and --chat-template-file: give one")
	case name != "":
		return server.BuiltinTemplate(name)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--chat-template-file: %w", err)
		}
		return string(b), nil
	}
	return "", nil
}

// poolingFlag reads --pooling; nil keeps the model's.
func poolingFlag(s string) (*engine.Pooling, error) {
	var p engine.Pooling
	switch s {
	case "":
		return nil, nil
	case "mean":
		p = engine.PoolMean
	case "cls":
		p = engine.PoolCLS
	case "last":
		p = engine.PoolLast
	case "none":
		p = engine.PoolNone
	default:
		return nil, fmt.Errorf("--pooling must be none, mean, cls or last, not %q", s)
	}
	return &p, nil
}

// requestDefaults are the sampling flags the command line set.
func requestDefaults(c *cli.Context) server.RequestDefaults {
	var d server.RequestDefaults
	f64 := func(name string) *float64 {
		if !c.IsSet(name) {
			return nil
		}
		v := c.Float64(name)
		return &v
	}
	d.Temperature, d.TopP, d.MinP, d.RepeatPenalty = f64("temp"), f64("top-p"), f64("min-p"), f64("repeat-penalty")
	if c.IsSet("top-k") {
		k := c.Int("top-k")
		d.TopK = &k
	}
	if seed := c.Int64("seed"); c.IsSet("seed") && seed != -1 {
		d.Seed = &seed
	}
	if n := c.Int("n-predict"); n > 0 {
		d.MaxTokens = n
	}
	return d
}

// maxConnsPerIP turns the flag, where 0 is no cap, into
// server.Options.MaxConnsPerIP, where 0 is the default and negative no cap.
func maxConnsPerIP(flag int) int {
	if flag == 0 {
		return -1
	}
	return flag
}
