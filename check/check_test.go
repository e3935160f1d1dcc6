package check

import (
	"strings"
	"testing"
)

// TestQuick runs the quick check on the test device: every kernel and
// invariant must pass, under the validation layer.
func TestQuick(t *testing.T) {
	rep, err := Run(Options{Validation: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Checks {
		if !r.Pass {
			t.Errorf("%s failed: %s", r.Name, r.Detail)
		}
	}
	if rep.Passed < 20 || !rep.OK() {
		t.Errorf("%d checks passed, %d failed; want at least 20 and none failed", rep.Passed, rep.Failed)
	}
	if len(rep.Bandwidth) == 0 || rep.Bandwidth[0].GBps <= 0 {
		t.Errorf("no copy bandwidth measured: %+v", rep.Bandwidth)
	}
	t.Logf("%d checks in %.1f s on %s", rep.Passed, rep.Seconds, rep.Device.Name)
}

// TestPlantedFaultIsReported plants a wrong result into kernels of several
// kinds and checks that each is reported as a failure, and that an honest
// run of the same checks with the same inputs passes.
func TestPlantedFaultIsReported(t *testing.T) {
	for _, only := range []string{"matvec/Q4_K/37x2560/n=1", "attention/F16/hd128/group4/tokens1/", "rmsnorm/3x37", "layernorm/3x37", "bias/9x1536/gelu", "copy/"} {
		t.Run(only, func(t *testing.T) {
			var planted []string
			rep, err := Run(Options{Only: only, Seed: 5, Tamper: func(name string, got []float32) {
				planted = append(planted, name)
				PlantFault(got)
			}})
			if err != nil {
				t.Fatal(err)
			}
			if len(planted) == 0 || rep.Failed != len(planted) || rep.Passed != 0 || rep.OK() {
				t.Fatalf("planted faults in %v; report: %d passed, %d failed", planted, rep.Passed, rep.Failed)
			}
			for _, r := range rep.Checks {
				if r.Pass || r.Error == nil || *r.Error <= r.Limit || !strings.Contains(r.Detail, "output") {
					t.Errorf("%s: pass %v, error %v, limit %g, detail %q", r.Name, r.Pass, r.Error, r.Limit, r.Detail)
				}
			}
			honest, err := Run(Options{Only: only, Seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			if !honest.OK() {
				t.Fatalf("without the fault: %d passed, %d failed", honest.Passed, honest.Failed)
			}
		})
	}
}
