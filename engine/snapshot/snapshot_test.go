package snapshot

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"headinfer/engine"
	"headinfer/engine/gguf"
	"headinfer/vk/vktest"
)

var modelsDir = filepath.Join("..", "..", "..", "shared", "models")

// load loads a model on a device of its own; the test fails on validation
// messages.
func load(t testing.TB, path string, opt engine.Options) *engine.Model {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skip("model not found:", err)
	}
	opt.Validation = vktest.Validation()
	if opt.CtxSize == 0 {
		opt.CtxSize = 256
	}
	m, err := engine.Load(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if msgs := m.Device().ValidationMessages(); len(msgs) > 0 {
			t.Errorf("Vulkan validation messages:\n%s", strings.Join(msgs, "\n"))
		}
		m.Close()
	})
	return m
}

func session(t testing.TB, m *engine.Model) *engine.Session {
	t.Helper()
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(se.Close)
	return se
}

// run generates n greedy tokens after prompt from whatever se holds and
// returns the logits before each.
func run(t testing.TB, se *engine.Session, prompt []int32, n int) [][]float32 {
	t.Helper()
	var rows [][]float32
	gp := engine.GenerateParams{MaxTokens: n, Logits: func(_ int, l []float32) { rows = append(rows, append([]float32(nil), l...)) }}
	if _, err := se.Generate(context.Background(), prompt, gp, func(int32) bool { return true }); err != nil {
		t.Fatal(err)
	}
	return rows
}

// sameBits fails the test unless a and b are bit-identical.
func sameBits(t *testing.T, what string, a, b [][]float32) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d rows of logits, want %d", what, len(b), len(a))
	}
	for i := range a {
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				t.Fatalf("%s: logit %d of token %d is %v, want %v", what, j, i, b[i][j], a[i][j])
			}
		}
	}
}

const story = "Once upon a time there was a little girl named Lily. She loved to play outside in the park with her dog. One day"

// TestRestoredLogitsIdentical saves the KV of a prompt, restores it in a
// fresh session, and checks that generating from there gives the logits
// of the uncached run bit for bit, with the KV on the device and in the
// host store, in f16 and f32, for the same prompt and for a longer one.
func TestRestoredLogitsIdentical(t *testing.T) {
	path := filepath.Join(modelsDir, "stories260K.gguf")
	for _, opt := range []engine.Options{
		{Offload: engine.OffloadNone},
		{Offload: engine.OffloadHead, Chunk: 7},
		{Offload: engine.OffloadNone, KVType: "f32"},
	} {
		t.Run(opt.Offload+"-"+opt.KVType, func(t *testing.T) {
			m := load(t, path, opt)
			id := m.Identity()
			prompt := m.Tokenizer.Encode(story, true)
			longer := m.Tokenizer.Encode(story+" she found a big red ball under a tree.", true)
			if !slices.Equal(longer[:len(prompt)], prompt) {
				t.Fatal("the longer prompt does not begin with the prompt's tokens")
			}
			const n = 20
			want := run(t, session(t, m), prompt, n)
			wantLonger := run(t, session(t, m), longer, n)

			// The snapshot is taken after generation: it must hold the
			// prompt's positions only.
			se := session(t, m)
			run(t, se, prompt, n)
			file := filepath.Join(t.TempDir(), "kv.snap")
			if err := SaveFile(file, se, id, len(prompt)); err != nil {
				t.Fatal(err)
			}

			for _, c := range []struct {
				name   string
				prompt []int32
				want   [][]float32
			}{{"same prompt", prompt, want}, {"longer prompt", longer, wantLonger}} {
				se := session(t, m)
				kept, err := LoadPrefix(file, se, id, c.prompt)
				if err != nil {
					t.Fatal(err)
				}
				if wantKept := min(len(prompt), len(c.prompt)-1); kept != wantKept || len(se.Tokens()) != kept {
					t.Fatalf("%s: kept %d tokens (session holds %d), want %d", c.name, kept, len(se.Tokens()), wantKept)
				}
				before := se.Stats()
				got := run(t, se, c.prompt[kept:], n)
				if p := se.Stats().PrefillTokens - before.PrefillTokens; p != len(c.prompt)-kept {
					t.Errorf("%s: prefilled %d tokens, want %d", c.name, p, len(c.prompt)-kept)
				}
				sameBits(t, c.name, c.want, got)
			}

			// A prompt that shares nothing loads nothing.
			other := session(t, m)
			if kept, err := LoadPrefix(file, other, id, []int32{prompt[0] + 1, 5, 6}); err != nil || kept != 0 || len(other.Tokens()) != 0 {
				t.Errorf("unrelated prompt: kept %d, err %v, session holds %d", kept, err, len(other.Tokens()))
			}
		})
	}
}

// primed loads stories260K and returns the story prompt's tokens, the
// logits of n tokens generated after it, and a session that holds the
// prompt and one generated token.
func primed(t *testing.T, n int) (m *engine.Model, prompt []int32, want [][]float32, se *engine.Session) {
	m = load(t, filepath.Join(modelsDir, "stories260K.gguf"), engine.Options{})
	prompt = m.Tokenizer.Encode(story, true)
	want = run(t, session(t, m), prompt, n)
	se = session(t, m)
	run(t, se, prompt, 1)
	return m, prompt, want, se
}

// TestGroups restores a snapshot whose slots are split into byte planes
// in many groups, the last one partial.
func TestGroups(t *testing.T) {
	const n = 8
	m, prompt, want, se := primed(t, n)
	id := m.Identity()
	slot := se.KVLayout().SlotBytes(len(prompt), false)
	defer func(g int) { groupBytes = g }(groupBytes)
	groupBytes = 3*slot + slot/2
	if per := groupEnds(slotSizes(se.KVLayout(), len(prompt)))[0]; per != 3 || se.KVLayout().Slots()%per == 0 {
		t.Fatalf("%d slots in groups of %d: the test wants a partial last group", se.KVLayout().Slots(), per)
	}
	file := filepath.Join(t.TempDir(), "kv.snap")
	if err := SaveFile(file, se, id, len(prompt)); err != nil {
		t.Fatal(err)
	}
	re := session(t, m)
	kept, err := LoadPrefix(file, re, id, prompt)
	if err != nil || kept != len(prompt)-1 {
		t.Fatalf("kept %d, err %v", kept, err)
	}
	sameBits(t, "groups of 3 slots", want, run(t, re, prompt[kept:], n))
}

// TestBadSnapshots checks that every damaged or foreign snapshot is
// refused with the right error, leaves the session empty, and that a
// normal prefill afterwards gives the uncached logits.
func TestBadSnapshots(t *testing.T) {
	const n = 6
	m, prompt, want, se := primed(t, n)
	id := m.Identity()
	var good bytes.Buffer
	if err := Write(&good, se, id, len(prompt), Options{}); err != nil {
		t.Fatal(err)
	}
	g := good.Bytes()
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(g)) }
	otherID := id
	otherID[7] ^= 1
	var foreign bytes.Buffer
	if err := Write(&foreign, se, otherID, len(prompt), Options{}); err != nil {
		t.Fatal(err)
	}
	tinyModel := load(t, filepath.Join(modelsDir, "llama-2-tiny-random.gguf"), engine.Options{})
	tiny := session(t, tinyModel)
	run(t, tiny, tinyModel.Tokenizer.Encode("Once upon a time", true), 1)
	var tinySnap bytes.Buffer
	if err := Write(&tinySnap, tiny, tinyModel.Identity(), len(tiny.Tokens()), Options{}); err != nil {
		t.Fatal(err)
	}
	if tinyModel.Identity() == id {
		t.Fatal("two different models have the same identity")
	}

	cases := []struct {
		name string
		data []byte
		want error // or, for trailing garbage, ErrTruncated: zstd reads it as a cut-off frame
	}{
		{"empty", nil, ErrNotSnapshot},
		{"not a snapshot", []byte(strings.Repeat("GGUF and more ", 20)), ErrNotSnapshot},
		{"another model", tinySnap.Bytes(), ErrOtherModel},
		{"another identity", foreign.Bytes(), ErrOtherModel},
		{"newer version", edit(func(b []byte) []byte { b[8] = Version + 1; return b }), ErrVersion},
		{"header bit flipped", edit(func(b []byte) []byte { b[53] ^= 0x10; return b }), ErrCorrupt},
		{"truncated header", g[:40], ErrTruncated},
		{"truncated tokens", g[:headerSize+10], ErrTruncated},
		{"truncated slots", g[:len(g)/2], ErrTruncated},
		{"checksum cut off", g[:len(g)-2], ErrTruncated},
		{"payload byte flipped", edit(func(b []byte) []byte { b[len(b)-40] ^= 0x55; return b }), ErrCorrupt},
		{"payload bytes flipped early", edit(func(b []byte) []byte { b[headerSize+30] ^= 0xff; return b }), ErrCorrupt},
		{"trailing garbage", append(bytes.Clone(g), 1, 2, 3), ErrCorrupt},
	}
	for _, c := range cases {
		file := filepath.Join(t.TempDir(), "kv.snap")
		if err := os.WriteFile(file, c.data, 0o644); err != nil {
			t.Fatal(err)
		}
		se := session(t, m)
		run(t, se, []int32{1, 2, 3}, 1) // something for a failed load to clear
		kept, err := LoadPrefix(file, se, id, prompt)
		if !errors.Is(err, c.want) && !(c.name == "trailing garbage" && errors.Is(err, ErrTruncated)) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
		if kept != 0 || len(se.Tokens()) != 0 {
			t.Errorf("%s: kept %d, the session holds %d tokens after a failed load", c.name, kept, len(se.Tokens()))
		}
		if err != nil && !strings.Contains(err.Error(), file) {
			t.Errorf("%s: the error does not name the file: %v", c.name, err)
		}
		sameBits(t, c.name+", then a normal prefill", want, run(t, se, prompt, n))
	}
}

// TestPlanes checks that split and join are inverse for both element
// sizes and put byte b of every element in plane b.
func TestPlanes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, elem := range []int{2, 4} {
		src := make([]byte, elem*37)
		for i := range src {
			src[i] = byte(r.Uint32())
		}
		p := split(nil, src, elem)
		for i := 0; i < 37; i++ {
			for b := 0; b < elem; b++ {
				if p[b*37+i] != src[i*elem+b] {
					t.Fatalf("elem %d: plane %d element %d is %d, want %d", elem, b, i, p[b*37+i], src[i*elem+b])
				}
			}
		}
		back := make([]byte, len(src))
		join(back, p, elem)
		if !bytes.Equal(back, src) {
			t.Fatalf("elem %d: join(split(x)) != x", elem)
		}
	}
}

// TestIdentityStable checks that two loads of one file agree.
func TestIdentityStable(t *testing.T) {
	path := filepath.Join(modelsDir, "stories260K.gguf")
	a, b := load(t, path, engine.Options{}), load(t, path, engine.Options{CtxSize: 64})
	if a.Identity() != b.Identity() {
		t.Fatal("the same file gave two identities")
	}
}

// synthFile writes a synthetic model of spec to a file of its own and
// returns its path.
func synthFile(t testing.TB, spec engine.SynthSpec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "synth.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Synth(f, spec); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// BenchmarkRatio reports the compression ratio (raw KV bytes / snapshot
// bytes) of real KV, with and without byte planes: stories260K after a
// prompt and generated text, and a synthetic model of random weights.
func BenchmarkRatio(b *testing.B) {
	synth := synthFile(b, engine.SynthSpec{Arch: "llama", Dim: 512, Layers: 4, Heads: 8, KVHeads: 4, FFN: 1024, Vocab: 1024, Ctx: 1024,
		RopeBase: 10000, Type: gguf.Q8_0, Seed: 7})
	for _, model := range []struct{ name, path string }{
		{"stories260K", filepath.Join(modelsDir, "stories260K.gguf")},
		{"synth", synth},
	} {
		for _, kvType := range []string{"f16", "f32"} {
			m := load(b, model.path, engine.Options{CtxSize: 1024, KVType: kvType})
			se := session(b, m)
			run(b, se, m.Tokenizer.Encode(strings.Repeat(story+" ", 4), true), 400)
			n := len(se.Tokens())
			for _, planes := range []bool{true, false} {
				for _, level := range []zstd.EncoderLevel{zstd.SpeedDefault, zstd.SpeedBetterCompression} {
					layout := map[bool]string{true: "planes", false: "interleaved"}[planes]
					b.Run(model.name+"/"+kvType+"/"+layout+"/"+level.String(), func(b *testing.B) {
						var out bytes.Buffer
						for b.Loop() {
							out.Reset()
							if err := Write(&out, se, m.Identity(), n, Options{NoPlanes: !planes, Level: level}); err != nil {
								b.Fatal(err)
							}
						}
						// The zstd stream holds the token ids and the slots.
						raw := 4*n + se.KVLayout().Slots()/2*(se.KVLayout().SlotBytes(n, false)+se.KVLayout().SlotBytes(n, true))
						b.ReportMetric(float64(raw)/float64(out.Len()-headerSize), "ratio")
						b.ReportMetric(float64(n), "positions")
						b.SetBytes(int64(raw))
					})
				}
			}
		}
	}
}

// TestRingSnapshot saves a Gemma 3 sequence whose windowed layers' slots
// are rings, after it ran past them: the snapshot holds those layers'
// last window only (smaller than with --swa-full), restores into a
// session that continues bit for bit, and is refused, with the session
// left empty, by one that keeps every position.
func TestRingSnapshot(t *testing.T) {
	spec := engine.SynthSpec{Arch: "gemma3", Dim: 64, Layers: 6, Heads: 4, KVHeads: 2, HeadDim: 32, FFN: 96,
		Vocab: 300, Ctx: 2048, RopeBase: 1e6, Type: gguf.F32, Seed: 9, Tied: true, Window: 16}
	path := synthFile(t, spec)
	r := rand.New(rand.NewPCG(1, 2))
	prompt := make([]int32, 700) // past the rings of 512 positions
	for i := range prompt {
		prompt[i] = int32(3 + r.IntN(spec.Vocab-3))
	}
	next := []int32{7, 8, 9}
	sizes := map[bool]int64{}
	for _, full := range []bool{false, true} {
		m := load(t, path, engine.Options{CtxSize: 1024, Chunk: 64, SWAFull: full})
		if (m.Plan().Rings != nil) == full {
			t.Fatalf("--swa-full %v: rings %v", full, m.Plan().Rings)
		}
		id := m.Identity()
		se := session(t, m)
		run(t, se, prompt, 4)
		file := filepath.Join(t.TempDir(), "kv.snap")
		if err := SaveFile(file, se, id, len(se.Tokens())); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		sizes[full] = st.Size()
		re := session(t, m)
		if _, err := LoadFile(file, re, id); err != nil {
			t.Fatal(err)
		}
		sameBits(t, "restored", run(t, se, next, 4), run(t, re, next, 4))

		// The other setting refuses it.
		other := load(t, path, engine.Options{CtxSize: 1024, Chunk: 64, SWAFull: !full})
		os2 := session(t, other)
		run(t, os2, []int32{5, 6}, 1)
		if _, err := LoadFile(file, os2, id); !errors.Is(err, ErrGeometry) || !strings.Contains(err.Error(), "--swa-full") || len(os2.Tokens()) != 0 {
			t.Errorf("a snapshot made with --swa-full %v, loaded without: %v (the session holds %d)", full, err, len(os2.Tokens()))
		}
	}
	// Five of six layers keep 16 positions instead of about 700.
	if sizes[false]*3 > sizes[true] {
		t.Errorf("the snapshot with rings has %d bytes, with every position %d", sizes[false], sizes[true])
	}
}

// TestQuantSnapshot saves quantized KV (Q8_0 keys, Q4_0 values, with the
// heads streamed from the host store), restores it into a session of the
// same types that continues bit for bit, and is refused, with the session
// left empty, by sessions whose keys or values are of another type.
func TestQuantSnapshot(t *testing.T) {
	spec := engine.SynthSpec{Arch: "llama", Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, FFN: 256,
		Vocab: 300, Ctx: 512, RopeBase: 10000, Type: gguf.F32, Seed: 5}
	path := synthFile(t, spec)
	prompt := []int32{1, 17, 42, 99, 5, 250, 31, 8, 77, 12}
	next := []int32{7, 8, 9}
	opt := engine.Options{CtxSize: 300, Chunk: 4, Offload: engine.OffloadHead, KVTypeK: "q8_0", KVTypeV: "q4_0", DecodeAttn: engine.DecodeAttnGPU}
	m := load(t, path, opt)
	id := m.Identity()
	se := session(t, m)
	run(t, se, prompt, 3)
	file := filepath.Join(t.TempDir(), "kv.snap")
	if err := SaveFile(file, se, id, len(se.Tokens())); err != nil {
		t.Fatal(err)
	}
	re := session(t, m)
	if _, err := LoadFile(file, re, id); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "restored", run(t, se, next, 3), run(t, re, next, 3))

	for _, kv := range [][2]string{{"q8_0", "q8_0"}, {"f16", "q4_0"}} {
		o := opt
		o.KVTypeK, o.KVTypeV = kv[0], kv[1]
		other := session(t, load(t, path, o))
		run(t, other, []int32{5, 6}, 1)
		_, err := LoadFile(file, other, id)
		if !errors.Is(err, ErrGeometry) || !strings.Contains(err.Error(), "Q8_0 keys and Q4_0 values") || len(other.Tokens()) != 0 {
			t.Errorf("a q8_0/q4_0 snapshot loaded into %s/%s: %v (the session holds %d)", kv[0], kv[1], err, len(other.Tokens()))
		}
	}
}

// TestVersion1Loads reads a version 1 header, whose type field holds one
// type for keys and values, as such: a version 2 snapshot of f16 KV
// rewritten to version 1 restores bit for bit; with the field left in
// version 2's packing it is refused as corrupt.
func TestVersion1Loads(t *testing.T) {
	const n = 8
	m, prompt, want, se := primed(t, n)
	id := m.Identity()
	var buf bytes.Buffer
	if err := Write(&buf, se, id, len(prompt), Options{}); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	for _, tc := range []struct {
		name  string
		types uint32
		ok    bool
	}{{"version 1", uint32(gguf.F16), true}, {"version 2 packing", uint32(gguf.F16) | uint32(gguf.F16)<<16, false}} {
		b := bytes.Clone(buf.Bytes())
		if got := le.Uint32(b[48:]); got != uint32(gguf.F16)|uint32(gguf.F16)<<16 {
			t.Fatalf("version 2 type field %#x", got)
		}
		le.PutUint32(b[8:], 1)
		le.PutUint32(b[48:], tc.types)
		le.PutUint32(b[68:], crc32.ChecksumIEEE(b[:68]))
		file := filepath.Join(t.TempDir(), "kv.snap")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		re := session(t, m)
		kept, err := LoadPrefix(file, re, id, prompt)
		if !tc.ok {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: %v, want ErrCorrupt", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		sameBits(t, tc.name, want, run(t, re, prompt[kept:], n))
	}
}
