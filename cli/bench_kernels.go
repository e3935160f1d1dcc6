package cli

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/vk"
)

// benchKernelsCommand measures the matrix × vector kernels against a plain
// copy on the chosen device, with device timestamps.
func benchKernelsCommand() *cli.Command {
	return &cli.Command{
		Name:  "kernels",
		Usage: "matrix × vector bandwidth per weight type against a copy kernel, and dispatch overhead",
		Flags: []cli.Flag{
			deviceFlag(),
			&cli.IntFlag{Name: "rows", Value: 4096, Usage: "matrix rows"},
			&cli.IntFlag{Name: "cols", Value: 4096, Usage: "matrix columns"},
			&cli.IntFlag{Name: "iters", Value: 20, Usage: "timed runs of each kernel"},
			&cli.StringFlag{Name: "types", Value: "f32,f16,bf16,q8_0,q4_0,q4_k,q5_k,q6_k", Usage: "weight types to measure"},
			&cli.StringFlag{Name: "vectors", Usage: fmt.Sprintf("also time each type's batched product with these numbers of vectors, comma-separated (1 to %d, e.g. 1,2,4,8): a decode step of that many sequences, the weights read once", kernel.MatVecMaxBatch)},
			&cli.StringFlag{Name: "geometry", Usage: "also time each type with these workgroup shapes, THREADSxROWS comma-separated (e.g. 64x4,128x2), reading the GGUF layout as GPUs do: for choosing a GPU's defaults; THREADSxROWS/whole reads quantized rows in whole units (the kernel's layout before fine units), for comparison. With --vectors, each shape's batched product too"},
		},
		Action: func(c *cli.Context) error {
			vectors, err := parseVectors(c.String("vectors"))
			if err != nil {
				return err
			}
			d, err := vk.Open(vk.Options{Select: c.String("device"), Log: func(s string) { fmt.Fprintln(c.App.ErrWriter, s) }})
			if err != nil {
				return err
			}
			defer d.Close()
			w := c.App.Writer
			rows, cols, iters := c.Int("rows"), c.Int("cols"), c.Int("iters")
			if rows <= 0 || cols <= 0 || iters <= 0 {
				return fmt.Errorf("--rows, --cols and --iters must be positive")
			}
			fmt.Fprintf(w, "device: %s (%s)\n", d.Info().Name, d.Info().Driver)
			cp, err := kernel.BenchCopy(d, rows*cols*2, iters)
			if err != nil {
				return err
			}
			fmt.Fprintln(w, cp)
			type geom struct {
				wg, rows int
				whole    bool
			}
			var geoms []geom
			if g := c.String("geometry"); g != "" {
				for _, s := range strings.Split(g, ",") {
					var wg, r int
					shape, whole := strings.CutSuffix(s, "/whole")
					if n, err := fmt.Sscanf(shape, "%dx%d", &wg, &r); n != 2 || err != nil || fmt.Sprintf("%dx%d", wg, r) != shape {
						return fmt.Errorf("--geometry %q: want THREADSxROWS or THREADSxROWS/whole, e.g. 128x2", s)
					}
					geoms = append(geoms, geom{wg, r, whole})
				}
			}
			var types []gguf.Type
			for _, name := range strings.Split(c.String("types"), ",") {
				t, err := parseType(name)
				if err != nil {
					return err
				}
				types = append(types, t)
			}
			for _, t := range types {
				r, err := kernel.BenchMatVec(d, t, rows, cols, iters)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%s  %5.1f%% of copy\n", r, 100*r.GBps/cp.GBps)
				for _, g := range geoms {
					r, err := kernel.BenchMatVecGeometry(d, t, rows, cols, 0, iters, g.wg, g.rows, g.whole)
					if err != nil {
						return err
					}
					fmt.Fprintf(w, "%s  %5.1f%% of copy\n", r, 100*r.GBps/cp.GBps)
				}
				if err := benchVectors(w, vectors, func(n int) (kernel.BenchResult, error) {
					return kernel.BenchMatVecBatch(d, t, rows, cols, n, iters)
				}); err != nil {
					return err
				}
				// Each shape with vectors as well: how many rows share a
				// vector's x decides what a batch costs on a GPU.
				for _, g := range geoms {
					if err := benchVectors(w, vectors, func(n int) (kernel.BenchResult, error) {
						return kernel.BenchMatVecGeometry(d, t, rows, cols, n, iters, g.wg, g.rows, g.whole)
					}); err != nil {
						return err
					}
				}
			}
			dc, err := kernel.BenchDispatch(d, 1000, 50)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "dispatch: %.2f µs per dispatch (device time, %d in one submit); %.1f µs per submit and wait\n",
				dc.PerDispatchUS, dc.Dispatches, dc.PerSubmitUS)
			return nil
		},
	}
}

// parseVectors reads --vectors: distinct counts of 1 to the batched
// kernel's most, in increasing order (none when s is empty).
func parseVectors(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var ns []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > kernel.MatVecMaxBatch {
			return nil, fmt.Errorf("--vectors %q: %q is not a number of vectors from 1 to %d (the most one batched step takes)", s, f, kernel.MatVecMaxBatch)
		}
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return slices.Compact(ns), nil
}

// benchVectors times a batched product (bench, given the number of
// vectors) with each number of vectors and prints one line for each: the
// times and the weights' rate (counted once) as BenchResult does, the
// best time against that of the fewest vectors (×1.00 for the first line;
// near 1 while the kernel is bound by reading the weights), and the best
// time per vector.
func benchVectors(w io.Writer, vectors []int, bench func(n int) (kernel.BenchResult, error)) error {
	var base float64
	for i, n := range vectors {
		r, err := bench(n)
		if err != nil {
			return err
		}
		if i == 0 {
			base = r.BestNS
		}
		line := fmt.Sprintf("%s  ×%.2f vs n=%d  %8.1f µs/vector", r, r.BestNS/base, vectors[0], r.BestNS/1e3/float64(n))
		if r.Reads > 1 {
			line += fmt.Sprintf("  (weights read %d×: more vectors than a workgroup takes on this device)", r.Reads)
		}
		fmt.Fprintln(w, line)
	}
	return nil
}
