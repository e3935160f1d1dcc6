package grammar

import "testing"

// benchmarkMask times the mask over the Llama-2 vocabulary (32000 tokens)
// after prefix, with the generic JSON grammar. Warm: the state's
// transitions are already known, as they are after the first steps of a
// generation; cold: a fresh Matcher each time, so every transition the
// walk takes is computed.
func benchmarkMask(b *testing.B, prefix string, cold bool) {
	_, v := llamaVocab(b)
	g := mustParse(b, JSON)
	start := NewMatcher(g, v)
	if err := start.AcceptString(prefix); err != nil {
		b.Fatal(err)
	}
	allowed := 0
	for _, ok := range start.Allowed() {
		if ok {
			allowed++
		}
	}
	b.ReportMetric(float64(allowed), "allowed")
	b.ResetTimer()
	for b.Loop() {
		m := start
		if cold {
			b.StopTimer()
			m = NewMatcher(g, v)
			_ = m.AcceptString(prefix)
			b.StartTimer()
		}
		m.Allowed()
	}
}

func BenchmarkMaskObjectKeyWarm(b *testing.B) { benchmarkMask(b, `{"name": "Jo", "age": 42, `, false) }
func BenchmarkMaskObjectKeyCold(b *testing.B) { benchmarkMask(b, `{"name": "Jo", "age": 42, `, true) }
func BenchmarkMaskStringWarm(b *testing.B)    { benchmarkMask(b, `{"name": "Jo`, false) }
func BenchmarkMaskStringCold(b *testing.B)    { benchmarkMask(b, `{"name": "Jo`, true) }
func BenchmarkMaskNumberWarm(b *testing.B)    { benchmarkMask(b, `{"name": "Jo", "age": 4`, false) }
