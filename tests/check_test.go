package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckCommand runs headinfer check as a user would: its JSON names
// each check with its error and limit; a planted fault makes it fail with
// exit status 1; an unknown device is refused with the list of devices.
func TestCheckCommand(t *testing.T) {
	stdout, stderr, err := run(t, "check", "--quick", "--json", "--only", "rmsnorm")
	if err != nil {
		t.Fatalf("check: %v\n%s", err, stderr)
	}
	var rep struct {
		Device struct{ Name string }
		Checks []struct {
			Name  string
			Pass  bool
			Error *float64
			Limit float64
		}
		Passed, Failed int
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("check --json printed no JSON object: %v\n%s", err, stdout)
	}
	if rep.Device.Name == "" || len(rep.Checks) == 0 || rep.Failed != 0 || rep.Passed != len(rep.Checks) {
		t.Fatalf("report: %+v", rep)
	}
	for _, c := range rep.Checks {
		if !strings.HasPrefix(c.Name, "rmsnorm/") || !c.Pass || c.Error == nil || c.Limit <= 0 {
			t.Errorf("check %+v", c)
		}
	}

	stdout, stderr, err = run(t, "check", "--quick", "--only", "rmsnorm", "--plant-fault", "rmsnorm/3x37")
	if err == nil || !strings.Contains(stdout, "FAIL  rmsnorm/3x37") || !strings.Contains(stderr, "1 of 2 checks failed") {
		t.Fatalf("planted fault: err %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}

	_, stderr, err = run(t, "check", "--device", "no-such-device")
	if err == nil || !strings.Contains(stderr, "no-such-device") || !strings.Contains(stderr, "llvmpipe") {
		t.Fatalf("unknown device: err %v, stderr %s", err, stderr)
	}
}

// TestBundleRunRefusesUnwritableOutdir checks run.sh's first promise: an
// output folder it cannot write is refused before any work.
func TestBundleRunRefusesUnwritableOutdir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "../scripts/bundle-run.sh", filepath.Join(file, "out")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot write to") {
		t.Fatalf("run.sh into a path under a file: err %v, output %s", err, string(out))
	}
}
