package cli

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
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
		&cli.StringFlag{Name: "kv-cache-dir", Usage: "`DIR` for KV snapshots: sequences evicted by a request with another prompt are spilled there and restored when a later prompt begins with them; POST /slots/{id}?action=save|restore keeps its files there"},
		&cli.DurationFlag{Name: "grace", Value: server.DefaultGrace, Usage: "on SIGINT/SIGTERM, how long running requests may finish before they are cancelled"},
		&cli.StringFlag{Name: "reasoning-format", Value: server.ReasoningDeepSeek, Usage: "for a model whose chat template writes <think> blocks: deepseek sends the block as reasoning_content apart from content; none leaves the text as generated"},
		&cli.BoolFlag{Name: "reload-on-failure", Usage: "when the device fails, load the model again once before answering 503 for good"},
		&cli.IntFlag{Name: "agent-port", Usage: "also answer HAProxy's agent-check on this TCP port: \"up ready N%\" (the weight in proportion to the free places), \"up drain\" once shutting down, \"down\" while loading or after a device failure (0 = off)"},
		&cli.BoolFlag{Name: "embeddings", Usage: "serve POST /v1/embeddings and /embedding (each input's final hidden states pooled as the model says, mean when it says none, and L2-normalised); without it they answer 501"},
	)
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
	s := server.New(server.Options{
		ModelPath:     path,
		APIKey:        c.String("api-key"),
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
	return s.Serve(ctx, ln, c.Duration("grace"), func() (*engine.Model, error) { return lv.loadModel(c, path, false) })
}

// maxConnsPerIP turns the flag, where 0 is no cap, into
// server.Options.MaxConnsPerIP, where 0 is the default and negative no cap.
func maxConnsPerIP(flag int) int {
	if flag == 0 {
		return -1
	}
	return flag
}
