package cli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"headinfer/bytesize"
	"headinfer/engine"
)

// offloadFlags choose where the KV cache lives; every command that loads
// a model has them.
func offloadFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "gpu-mem", Usage: "device memory budget for weights, activations and KV, e.g. 512MiB or 6GiB (default: what the device reports, less 10%); with --devices, one size for all or one per device, e.g. 20GiB,8GiB"},
		&cli.StringFlag{Name: "host-mem", Usage: "host memory allowed for the streamed KV heads, e.g. 32GiB (default: no bound); a plan that needs more fails, saying how much"},
		&cli.StringFlag{Name: "offload", Value: engine.OffloadAuto, Usage: "KV placement: auto (stream the KV heads that do not fit), none (all on the device, or fail), head (stream every head)"},
		&cli.IntFlag{Name: "stream-block", Value: engine.DefaultStreamBlock, Usage: "KV positions a streamed head moves per copy (a multiple of 256)"},
		decodeAttnFlag(),
		&cli.BoolFlag{Name: "swa-full", Usage: "keep every position of the sliding-window layers' KV (as llama.cpp's --swa-full) instead of rings of about the window: a prefix can then be reused or saved from anywhere, at the cost of memory that grows with the context"},
		devicesFlag(), splitFlag(),
	}
}

// devicesFlag is --devices: the devices a model is split over.
func devicesFlag() cli.Flag {
	return &cli.StringFlag{Name: "devices", Usage: "split the model's layers over several Vulkan devices: indices or name substrings, comma-separated, in layer order, e.g. 0,1 (a device may be listed twice); each holds its layers' weights and plans its own KV heads, and the hidden state crosses between them through host memory once per step"}
}

// splitFlag is --split: the devices' shares of the layers.
func splitFlag() cli.Flag {
	return &cli.StringFlag{Name: "split", Usage: "with --devices: each device's share of the layers, in proportion, e.g. 3,1 (default: in proportion to the devices' memory budgets)"}
}

// decodeAttnFlag is --decode-attn: where decode steps attend the streamed
// KV heads.
func decodeAttnFlag() cli.Flag {
	return &cli.StringFlag{Name: "decode-attn", Value: engine.DecodeAttnAuto,
		Usage: "decode attention of streamed KV heads: gpu (copy their KV to the device), cpu (attend on the CPU where the KV lives), auto (the faster by measured rates; headinfer plan says which)"}
}

// parseDecodeAttn checks a --decode-attn value.
func parseDecodeAttn(s string) (string, error) {
	switch m := strings.ToLower(strings.TrimSpace(s)); m {
	case engine.DecodeAttnAuto, engine.DecodeAttnGPU, engine.DecodeAttnCPU:
		return m, nil
	}
	return "", fmt.Errorf("--decode-attn %q: use auto, gpu or cpu", s)
}

// offloadOptions reads the offload flags into opt.
func offloadOptions(c *cli.Context, opt *engine.Options) error {
	var gpuMems []uint64
	for _, f := range []struct {
		name string
		dst  *[]uint64
	}{{"gpu-mem", &gpuMems}, {"host-mem", nil}} {
		s := c.String(f.name)
		if s == "" {
			continue
		}
		items := []string{s}
		if f.dst != nil {
			items = strings.Split(s, ",")
		}
		for _, item := range items {
			n, err := bytesize.Parse(strings.TrimSpace(item))
			if err != nil {
				return fmt.Errorf("--%s: %w", f.name, err)
			}
			if n == 0 {
				return fmt.Errorf("--%s must be positive", f.name)
			}
			if f.dst == nil {
				opt.HostMem = n
			} else {
				*f.dst = append(*f.dst, n)
			}
		}
	}
	if len(gpuMems) == 1 {
		opt.GPUMem = gpuMems[0]
	} else {
		opt.GPUMems = gpuMems
	}
	if err := deviceOptions(c, opt); err != nil {
		return err
	}
	switch m := strings.ToLower(c.String("offload")); m {
	case engine.OffloadAuto, engine.OffloadNone, engine.OffloadHead:
		opt.Offload = m
	default:
		return fmt.Errorf("--offload %q: use auto, none or head", c.String("offload"))
	}
	sb := c.Int("stream-block")
	if sb <= 0 || sb%256 != 0 {
		return fmt.Errorf("--stream-block %d: must be a positive multiple of 256", sb)
	}
	opt.StreamBlock = sb
	opt.SWAFull = c.Bool("swa-full")
	var err error
	opt.DecodeAttn, err = parseDecodeAttn(c.String("decode-attn"))
	return err
}

// deviceOptions reads --devices and --split into opt: one device is
// --device, several split the model.
func deviceOptions(c *cli.Context, opt *engine.Options) error {
	if s := c.String("devices"); s != "" {
		var devs []string
		for _, d := range strings.Split(s, ",") {
			if d = strings.TrimSpace(d); d == "" {
				return fmt.Errorf("--devices %q: an empty device", s)
			}
			devs = append(devs, d)
		}
		if len(devs) == 1 {
			opt.Device = devs[0]
		} else {
			opt.Devices = devs
		}
	}
	if s := c.String("split"); s != "" {
		for _, v := range strings.Split(s, ",") {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return fmt.Errorf("--split %q: use each device's share of the layers as a number, e.g. 3,1", s)
			}
			opt.Split = append(opt.Split, f)
		}
	}
	return nil
}

// planCommand is `headinfer plan`: the memory plan without loading.
func planCommand() *cli.Command {
	flags := append(modelFlags(), parallelFlag(1), &cli.BoolFlag{Name: "json", Usage: "print the plan as JSON"})
	return &cli.Command{
		Name:  "plan",
		Usage: "show where a model's memory would go: weights, activations, streaming buffers, resident and streamed KV heads",
		UsageText: "headinfer plan -m MODEL [-c CTX] [--gpu-mem SIZE] [--host-mem SIZE] [--offload auto|none|head] [--chunk N] [--kv-type f16|f32|q8_0|q4_0] [--kv-type-k T] [--kv-type-v T] [--stream-block N] [--decode-attn auto|gpu|cpu] [--swa-full] [--device D | --devices D,D [--split A,B]] [--json]\n\n" +
			"Reads the model's metadata and the device's properties only; nothing is loaded.",
		Flags: flags,
		Action: func(c *cli.Context) error {
			opt, err := modelOptions(c)
			if err != nil {
				return err
			}
			path, err := modelPath(c, c.String("model"))
			if err != nil {
				return err
			}
			p, err := engine.PlanModel(path, opt)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			}
			fmt.Fprint(c.App.Writer, p)
			return nil
		},
	}
}
