package tests

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// offloadOutput is the part of `generate --json` that offload adds.
type offloadOutput struct {
	PromptIDs  []int32 `json:"prompt_ids"`
	IDs        []int32 `json:"ids"`
	DecodeAttn string  `json:"decode_attn"`
	Timings    struct {
		DecodeTokens   int     `json:"decode_tokens"`
		H2DBytes       uint64  `json:"h2d_bytes"`
		D2HBytes       uint64  `json:"d2h_bytes"`
		CopyWaitMS     float64 `json:"copy_wait_ms"`
		HostWaits      int     `json:"host_waits"`
		Submissions    int     `json:"submissions"`
		CPUAttentionMS float64 `json:"cpu_attention_ms"`
	} `json:"timings"`
	Memory struct {
		DeviceBytesPeak   uint64 `json:"device_bytes_peak"`
		DeviceKVBytesPeak uint64 `json:"device_kv_bytes_peak"`
		HostKVBytes       uint64 `json:"host_kv_bytes"`
		ResidentSlots     int    `json:"resident_slots"`
		StreamedSlots     int    `json:"streamed_slots"`
	} `json:"memory"`
}

func generateJSON(t *testing.T, args ...string) offloadOutput {
	t.Helper()
	stdout, stderr, err := run(t, append([]string{"generate", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("generate %v: %v\n%s", args, err, stderr)
	}
	var out offloadOutput
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	return out
}

// TestOffloadLogitsIdentical compares --logits-out files of stories260K
// with every KV head streamed and with all of them resident: they must be
// equal byte for byte.
func TestOffloadLogitsIdentical(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	dir := t.TempDir()
	common := []string{"-m", model, "-p", "Lily and Tom went to the park to play with the big red ball", "-n", "200",
		"--temp", "0", "-c", "512", "--chunk", "7", "--stream-block", "256", "--decode-attn", "gpu"}
	none := generateJSON(t, append(common, "--offload", "none", "--logits-out", filepath.Join(dir, "none.f32"))...)
	head := generateJSON(t, append(common, "--offload", "head", "--logits-out", filepath.Join(dir, "head.f32"))...)
	a, err := os.ReadFile(filepath.Join(dir, "none.f32"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "head.f32"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) == 0 || len(a)%(4*512) != 0 {
		t.Fatalf("logits file of %d bytes", len(a))
	}
	if !bytes.Equal(a, b) {
		i := 0
		for i < min(len(a), len(b)) && a[i] == b[i] {
			i++
		}
		t.Errorf("logits files differ (%d and %d bytes), first at byte %d", len(a), len(b), i)
	}
	if none.Memory.StreamedSlots != 0 || none.Memory.ResidentSlots != 20 || none.Memory.HostKVBytes != 0 || none.Timings.H2DBytes != 0 {
		t.Errorf("--offload none: %+v", none)
	}
	if head.Memory.StreamedSlots != 20 || head.Memory.ResidentSlots != 0 || head.Memory.HostKVBytes != 20*2*512*8*2 {
		t.Errorf("--offload head: memory %+v", head.Memory)
	}
	// Every position's new K and V rows (8 f16 values each) cross to the
	// host once per slot, and nothing more.
	positions := uint64(len(head.PromptIDs) + head.Timings.DecodeTokens)
	if want := positions * 20 * 2 * 8 * 2; head.Timings.D2HBytes != want || head.Timings.H2DBytes < want {
		t.Errorf("--offload head: %d bytes to the host (want %d), %d to the device", head.Timings.D2HBytes, want, head.Timings.H2DBytes)
	}
}

// TestDecodeAttnCPU runs generate with every KV head streamed and decode
// attention on the CPU: the JSON says so, the decode steps wait for the
// host once per layer (stories260K has 5) and at the end, copy no KV to
// the device, and the greedy text is the one the device path gives (the
// logits differ in the last bits only).
func TestDecodeAttnCPU(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	common := []string{"-m", model, "-p", "Lily and Tom went to the park", "-n", "30", "--temp", "0", "-c", "512",
		"--chunk", "64", "--offload", "head"}
	gpu := generateJSON(t, append(common, "--decode-attn", "gpu")...)
	cpu := generateJSON(t, append(common, "--decode-attn", "cpu")...)
	if gpu.DecodeAttn != "gpu" || cpu.DecodeAttn != "cpu" {
		t.Fatalf("decode_attn: %q and %q", gpu.DecodeAttn, cpu.DecodeAttn)
	}
	steps := cpu.Timings.DecodeTokens
	if steps < 20 || cpu.Timings.HostWaits != 1+6*steps || cpu.Timings.Submissions != cpu.Timings.HostWaits {
		t.Errorf("%d decode steps: %d host waits, %d submissions; want 1 for the prefill and 6 per step",
			steps, cpu.Timings.HostWaits, cpu.Timings.Submissions)
	}
	if gpu.Timings.HostWaits != 1+gpu.Timings.DecodeTokens || cpu.Timings.CPUAttentionMS <= 0 || gpu.Timings.CPUAttentionMS != 0 {
		t.Errorf("gpu: %d host waits for %d steps; CPU attention %v ms (cpu) and %v ms (gpu)",
			gpu.Timings.HostWaits, gpu.Timings.DecodeTokens, cpu.Timings.CPUAttentionMS, gpu.Timings.CPUAttentionMS)
	}
	// The prefill copies what it needs; decode copies nothing.
	if cpu.Timings.H2DBytes >= gpu.Timings.H2DBytes/4 {
		t.Errorf("copied %d bytes to the device with CPU decode attention, %d without", cpu.Timings.H2DBytes, gpu.Timings.H2DBytes)
	}
	if !slices.Equal(gpu.IDs, cpu.IDs) {
		t.Errorf("greedy ids differ:\n gpu %v\n cpu %v", gpu.IDs, cpu.IDs)
	}
	stdout, stderr, err := run(t, "plan", "-m", model, "-c", "4096", "--offload", "head", "--decode-attn", "cpu")
	if err != nil || !strings.Contains(stdout, "decode attention of streamed heads: cpu") {
		t.Errorf("plan --decode-attn cpu: %v\n%s%s", err, stdout, stderr)
	}
	stdout, stderr, err = run(t, "plan", "-m", model, "-c", "4096", "--offload", "head")
	if err != nil || !strings.Contains(stdout, "GB/s") {
		t.Errorf("plan --decode-attn auto does not give the rates it chose by: %v\n%s%s", err, stdout, stderr)
	}
}

// TestOffloadDeviceKVConstant checks that with every head streamed the
// device's KV memory stays the same as the context grows, while the host
// store grows with it.
func TestOffloadDeviceKVConstant(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	var dev, host []uint64
	for _, ctx := range []string{"1024", "4096", "16384"} {
		out := generateJSON(t, "-m", model, "-p", "Once", "-n", "2", "--temp", "0", "-c", ctx, "--offload", "head")
		dev, host = append(dev, out.Memory.DeviceKVBytesPeak), append(host, out.Memory.HostKVBytes)
	}
	if dev[0] == 0 || dev[0] != dev[1] || dev[1] != dev[2] {
		t.Errorf("device KV bytes at contexts 1K, 4K, 16K: %v", dev)
	}
	if host[1] != 4*host[0] || host[2] != 16*host[0] {
		t.Errorf("host KV bytes at contexts 1K, 4K, 16K: %v", host)
	}
}

// TestPlanCommand checks `headinfer plan` and the budget errors.
func TestPlanCommand(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	stdout, stderr, err := run(t, "plan", "-m", model, "-c", "4096", "--gpu-mem", "8MiB")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, want := range []string{"budget 8.0 MiB", "weights", "activations", "streaming buffers", "resident KV", "streamed"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("plan output lacks %q:\n%s", want, stdout)
		}
	}
	stdout, stderr, err = run(t, "plan", "-m", model, "-c", "4096", "--gpu-mem", "1.5GiB", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var p struct {
		Budget   uint64 `json:"budget"`
		Resident int    `json:"resident_slots"`
		Streamed int    `json:"streamed_slots"`
	}
	if err := json.Unmarshal([]byte(stdout), &p); err != nil {
		t.Fatalf("plan --json: %v\n%s", err, stdout)
	}
	if p.Budget != 3<<29 || p.Resident != 20 || p.Streamed != 0 {
		t.Errorf("plan --json with 1.5GiB: %+v", p)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--gpu-mem", "100KiB"}, "needs"},
		{[]string{"--gpu-mem", "8MiB", "--offload", "none"}, "does not fit"},
		{[]string{"--gpu-mem", "lots"}, "--gpu-mem"},
		{[]string{"--offload", "some"}, "--offload"},
		{[]string{"--stream-block", "100"}, "multiple of 256"},
		{[]string{"--decode-attn", "tpu"}, "--decode-attn"},
	} {
		args := append([]string{"generate", "-m", model, "-p", "Once", "-n", "2", "-c", "4096"}, tc.args...)
		_, stderr, err := run(t, args...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("generate %v: err %v, stderr %q (want %q)", tc.args, err, stderr, tc.want)
		}
	}
}
