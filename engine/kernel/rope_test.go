package kernel

import (
	"math"
	"testing"

	"headinfer/vk/vktest"
)

// skMetaScaling is Meta's apply_scaling (llama3 reference model), in
// float64, written as Meta writes it rather than as RopeFreqs does.
func skMetaScaling(freqs []float64, factor, low, high, oldCtx float64) []float64 {
	lowWavelen := oldCtx / low
	highWavelen := oldCtx / high
	var out []float64
	for _, freq := range freqs {
		wavelen := 2 * math.Pi / freq
		if wavelen < highWavelen {
			out = append(out, freq)
		} else if wavelen > lowWavelen {
			out = append(out, freq/factor)
		} else {
			smooth := (oldCtx/wavelen - low) / (high - low)
			out = append(out, (1-smooth)*freq/factor+smooth*freq)
		}
	}
	return out
}

func TestRopeFreqs(t *testing.T) {
	const nRot, base = 128, 500000
	plain := RopeFreqs(nRot, base, nil)
	if len(plain) != nRot/2 {
		t.Fatalf("%d frequencies, want %d", len(plain), nRot/2)
	}
	unscaled := make([]float64, nRot/2)
	for i := range unscaled {
		unscaled[i] = 1 / math.Pow(base, float64(2*i)/nRot)
		if plain[i] != float32(unscaled[i]) {
			t.Errorf("freq %d = %v, want %v", i, plain[i], float32(unscaled[i]))
		}
	}

	s := &Llama3Scaling{Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}
	got := RopeFreqs(nRot, base, s)
	want := skMetaScaling(unscaled, 8, 1, 4, 8192)
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-7*want[i] {
			t.Errorf("scaled freq %d = %v, want %v", i, got[i], want[i])
		}
	}

	// By hand: i = 0 has wavelength 2π, far below 8192/4, and keeps
	// frequency 1. i = 48 has frequency 500000^-0.75 = 5.3183e-5 and
	// wavelength 1.18e5 > 8192, so it is divided by 8. i = 32 has frequency
	// 500000^-0.5 = 1.41421e-3 and wavelength 4442.88, between 2048 and
	// 8192: smooth = (8192/4442.88 − 1)/3 = 0.281283, and the frequency is
	// (1 − 0.281283)·1.41421e-3/8 + 0.281283·1.41421e-3 = 5.24846e-4.
	for _, c := range []struct {
		i    int
		want float64
	}{{0, 1}, {48, 5.31829e-5 / 8}, {32, 5.24846e-4}} {
		if math.Abs(float64(got[c.i])-c.want) > 2e-6*c.want {
			t.Errorf("scaled freq %d = %v, want %v (by hand)", c.i, got[c.i], c.want)
		}
	}
}

func TestRope(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	cases := []struct {
		heads, headDim, nRot int
		layout               RopeLayout
		scaling              *Llama3Scaling
	}{
		{3, 10, 6, RopeNormal, nil},
		{3, 10, 6, RopeNeox, nil},
		{5, 64, 64, RopeNormal, &Llama3Scaling{Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}},
		{5, 64, 64, RopeNeox, nil},
	}
	for _, tc := range cases {
		t.Run(tc.layout.String(), func(t *testing.T) {
			k, err := NewRope(d, tc.heads, tc.headDim, tc.nRot, tc.layout)
			if err != nil {
				t.Fatal(err)
			}
			freqs := RopeFreqs(tc.nRot, 10000, tc.scaling)
			fb := upload(t, d, f32Bytes(freqs))
			const tokens = 6
			n := tokens * tc.heads * tc.headDim
			x := randFloats(r, n, 1)
			// Not in order, with gaps, and large enough (θ up to 1.5·10⁶ rad)
			// to need the shader's range reduction.
			pos := []uint32{7, 0, 123_457, 1_480_611, 300_001, 4096}
			xb := upload(t, d, f32Bytes(x))
			pb := upload(t, d, skU32Bytes(pos))

			c, err := d.NewCommands()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Free()
			if err := k.Record(c, xb.All(), pb.All(), fb.All(), tokens); err != nil {
				t.Fatal(err)
			}
			if err := c.End(); err != nil {
				t.Fatal(err)
			}
			if err := d.Run(c); err != nil {
				t.Fatal(err)
			}
			want := skRopeRef(x, pos, freqs, tc.heads, tc.headDim, tc.nRot, tc.layout)
			assertClose(t, bytesF32(download(t, d, xb)), want, 1e-5, 2e-6)

			// Replaying the same commands with new positions (and new
			// inputs) rotates for the new positions.
			x = randFloats(r, n, 1)
			pos = []uint32{11, 12, 13, 200, 199, 1}
			if err := d.Write(xb.All(), f32Bytes(x)); err != nil {
				t.Fatal(err)
			}
			if err := d.Write(pb.All(), skU32Bytes(pos)); err != nil {
				t.Fatal(err)
			}
			if err := d.Run(c); err != nil {
				t.Fatal(err)
			}
			want = skRopeRef(x, pos, freqs, tc.heads, tc.headDim, tc.nRot, tc.layout)
			assertClose(t, bytesF32(download(t, d, xb)), want, 1e-5, 2e-6)
		})
	}
}

// TestRopeRows rotates rows that lie apart, as a batched step's q and k
// do between its sequences' v: the rows come out as Record rotates them
// packed, bit for bit, and the values between them are left alone.
func TestRopeRows(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	for _, layout := range []RopeLayout{RopeNormal, RopeNeox} {
		t.Run(layout.String(), func(t *testing.T) {
			const heads, headDim, nRot, tokens, gap = 3, 10, 8, 5, 7
			k, err := NewRope(d, heads, headDim, nRot, layout)
			if err != nil {
				t.Fatal(err)
			}
			row, stride := heads*headDim, heads*headDim+gap
			freqs := RopeFreqs(nRot, 10000, nil)
			pos := []uint32{3, 0, 77_001, 9, 1_000_003}
			spread := randFloats(r, (tokens-1)*stride+row, 1)
			packed := make([]float32, 0, tokens*row)
			for t := range tokens {
				packed = append(packed, spread[t*stride:t*stride+row]...)
			}
			fb, pb := upload(t, d, f32Bytes(freqs)), upload(t, d, skU32Bytes(pos))
			sb, kb := upload(t, d, f32Bytes(spread)), upload(t, d, f32Bytes(packed))
			c, err := d.NewCommands()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Free()
			if err := k.RecordRows(c, sb.All(), pb.All(), fb.All(), tokens, stride); err != nil {
				t.Fatal(err)
			}
			if err := k.Record(c, kb.All(), pb.All(), fb.All(), tokens); err != nil {
				t.Fatal(err)
			}
			if err := c.End(); err != nil {
				t.Fatal(err)
			}
			if err := d.Run(c); err != nil {
				t.Fatal(err)
			}
			gotSpread, gotPacked := bytesF32(download(t, d, sb)), bytesF32(download(t, d, kb))
			assertClose(t, gotPacked, skRopeRef(packed, pos, freqs, heads, headDim, nRot, layout), 1e-5, 2e-6)
			for i, v := range gotSpread {
				tok, at := i/stride, i%stride
				want := spread[i] // between rows: untouched
				if at < row {
					want = gotPacked[tok*row+at]
				}
				if math.Float32bits(v) != math.Float32bits(want) {
					t.Fatalf("value %d (token %d, %d into its row) = %v, want %v", i, tok, at, v, want)
				}
			}
			if err := k.RecordRows(c, sb.All(), pb.All(), fb.All(), tokens, row-1); err == nil {
				t.Error("rows closer than a row's length were accepted")
			}
		})
	}
}

func TestRopeRejectsBadShapes(t *testing.T) {
	d := vktest.Device(t)
	for _, s := range [][3]int{{4, 64, 65}, {4, 64, 7}, {4, 64, 0}, {0, 64, 64}} {
		if _, err := NewRope(d, s[0], s[1], s[2], RopeNormal); err == nil {
			t.Errorf("NewRope(%d heads, head size %d, %d rotated) was accepted", s[0], s[1], s[2])
		}
	}
}
