package engine

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

// TestSessionDeviceFailure makes the device's fourth submission fail (a
// step is one submission here: the prefill, then one per decode) and
// checks that generation stops there with a device failure, and that the
// session and the model stay failed: later steps fail at once instead of
// running on a device in an unknown state.
func TestSessionDeviceFailure(t *testing.T) {
	t.Setenv(vk.FaultSubmitEnv, "4")
	m, err := Load(filepath.Join(modelsDir(t), "stories260K.gguf"), Options{Validation: vktest.Validation()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	prompt := m.Tokenizer.Encode("Once upon a time", true)
	emitted := 0
	_, err = se.Generate(context.Background(), prompt, GenerateParams{MaxTokens: 20}, func(int32) bool {
		emitted++
		return true
	})
	if !errors.Is(err, ErrDeviceFailed) {
		t.Fatalf("generation on a device that fails: %v, want a device failure", err)
	}
	if emitted != 3 {
		t.Errorf("%d tokens before the failing fourth step, want 3", emitted)
	}
	if se.Failed() == nil || m.Failed() == nil {
		t.Fatalf("after the failure: session %v, model %v; want both failed", se.Failed(), m.Failed())
	}
	if err := se.Decode(1, false); !errors.Is(err, ErrDeviceFailed) {
		t.Errorf("decode on the failed session: %v", err)
	}
	other, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Prefill(context.Background(), prompt, false); !errors.Is(err, ErrDeviceFailed) {
		t.Errorf("prefill of a new session on the failed device: %v", err)
	}
}
