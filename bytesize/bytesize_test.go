package bytesize

import "testing"

func TestParse(t *testing.T) {
	good := map[string]uint64{
		"1536": 1536, "512MiB": 512 << 20, "6GiB": 6 << 30, "6G": 6 << 30,
		"1.5GB": 1_500_000_000, " 2 kib ": 2048, "0": 0, "1TB": 1e12, "3b": 3,
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1GiB", "1.2.3", "5 parsecs", "NaN", "1e30TB", "Inf"} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormat(t *testing.T) {
	cases := map[uint64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 512 << 20: "512.0 MiB",
		3 << 29: "1.50 GiB",
	}
	for in, want := range cases {
		if got := Format(in); got != want {
			t.Errorf("Format(%d) = %q, want %q", in, got, want)
		}
	}
}
