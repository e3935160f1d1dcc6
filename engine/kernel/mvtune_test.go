//go:build mvtune

package kernel

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk/vktest"
)

func TestMVTune(t *testing.T) {
	d := vktest.Device(t)
	r, err := BenchCopy(d, 64<<20, 40)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	geoms := strings.Fields(os.Getenv("GEOMS"))
	types := map[string]gguf.Type{"F32": gguf.F32, "F16": gguf.F16, "BF16": gguf.BF16, "Q8_0": gguf.Q8_0, "Q4_0": gguf.Q4_0}
	for _, tn := range strings.Fields(os.Getenv("TYPES")) {
		for _, g := range geoms {
			p := strings.Split(g, "x")
			if len(p) > 2 {
				mvTuneWide, _ = strconv.Atoi(p[2])
			} else {
				mvTuneWide = -1
			}
			wg, _ := strconv.Atoi(p[0])
			rows, _ := strconv.Atoi(p[1])
			mvTuneWG, mvTuneRows = wg, rows
			res, err := BenchMatVec(d, types[tn], 4096, 4096, 40)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s wg=%d rows=%d wide=%d %v  %.0f%%", tn, wg, rows, mvTuneWide, res, 100*res.GBps/r.GBps)
		}
	}
}
