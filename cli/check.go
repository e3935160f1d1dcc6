package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"headinfer/bytesize"
	"headinfer/check"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "check that the device computes every kernel right (against float64 on the host) and measure its bandwidth",
		Description: "Runs every compute kernel on the device with fresh random inputs and compares the result with a\n" +
			"float64 reference computed on the host (each weight type's products, norms, RoPE, softmax,\n" +
			"attention over each KV type); then the engine's exactness invariants on a synthetic model\n" +
			"(offloaded KV heads, batched sequences, snapshots and prefill chunks change no bit of the\n" +
			"logits); then the copy, host↔device and matrix kernel bandwidths. The exit status is 1 if any\n" +
			"check fails. --quick skips the largest shapes of 7B/8B models.",
		Flags: []cli.Flag{
			deviceFlag(),
			&cli.BoolFlag{Name: "quick", Usage: "small shapes only (seconds even on a CPU device)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object: device, checks (name, pass, error, limit), bandwidth"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the random inputs (0: a fresh one, printed)"},
			&cli.StringFlag{Name: "only", Usage: "run only the checks whose names contain this text (e.g. matvec/Q4_K, attention, engine/)"},
			&cli.BoolFlag{Name: "validate", Usage: "run under the Khronos validation layer; a message fails the check that caused it"},
			// Plants a wrong result into the checks whose names contain
			// the value, to show that check reports it.
			&cli.StringFlag{Name: "plant-fault", Hidden: true},
		},
		Action: func(c *cli.Context) error {
			w := c.App.Writer
			opt := check.Options{Device: c.String("device"), Full: !c.Bool("quick"), Seed: c.Uint64("seed"),
				Validation: c.Bool("validate"), Only: c.String("only"), Log: func(s string) { fmt.Fprintln(c.App.ErrWriter, s) }}
			if p := c.String("plant-fault"); p != "" {
				opt.Tamper = func(name string, got []float32) {
					if strings.Contains(name, p) {
						check.PlantFault(got)
					}
				}
			}
			// Each result as it comes: on stdout, or with --json on
			// stderr, so that a long run shows its progress.
			progress := w
			if c.Bool("json") {
				progress = c.App.ErrWriter
			}
			tw := tabwriter.NewWriter(progress, 0, 0, 2, ' ', 0)
			opt.Each = func(r check.Result) {
				printResult(tw, r)
				tw.Flush()
			}
			rep, err := check.Run(opt)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printReport(w, rep)
			}
			if !rep.OK() {
				return fmt.Errorf("%d of %d checks failed on %s", rep.Failed, rep.Failed+rep.Passed, rep.Device.Name)
			}
			return nil
		},
	}
}

func printResult(w io.Writer, r check.Result) {
	status, e := "pass", "-"
	if !r.Pass {
		status = "FAIL"
	}
	if r.Error != nil {
		e = fmt.Sprintf("%.3g", *r.Error)
	}
	fmt.Fprintf(w, "%s\t%s\terror %s\tlimit %.3g\t%.2fs\t%s\n", status, r.Name, e, r.Limit, r.Seconds, r.Detail)
}

func printReport(w io.Writer, rep check.Report) {
	d := rep.Device
	fmt.Fprintf(w, "\ndevice: %s (%s), vendor 0x%04x device 0x%04x, driver %s %s, Vulkan %s, subgroup %d\n",
		d.Name, d.Type, d.VendorID, d.DeviceID, d.Driver, d.DriverInfo, d.APIVersion, d.SubgroupSize)
	for i, h := range d.Heaps {
		kind := "host"
		if h.DeviceLocal {
			kind = "device-local"
		}
		fmt.Fprintf(w, "heap %d: %s %s\n", i, bytesize.Format(h.Bytes), kind)
	}
	fmt.Fprintln(w, "\nbandwidth:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, m := range rep.Bandwidth {
		of := ""
		if m.OfCopy > 0 {
			of = fmt.Sprintf("%.0f%% of copy", 100*m.OfCopy)
		}
		fmt.Fprintf(tw, "  %s\t%.2f GB/s\t%s\t%s\n", m.Name, m.GBps, of, m.Detail)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d passed, %d failed (seed %d, %.1f s)\n", rep.Passed, rep.Failed, rep.Seed, rep.Seconds)
}
