package server

import (
	"testing"
)

// TestBuiltinTemplates renders a conversation (a system message, a user
// turn, the assistant's answer, a second user turn) with each built-in
// template and compares it with the family's turn format as its model
// cards write it.
func TestBuiltinTemplates(t *testing.T) {
	msgs := []message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"},
		{Role: "assistant", Content: "Hello."}, {Role: "user", Content: "Again"}}
	want := map[string]string{
		"chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n" +
			"<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n",
		"llama2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Again [/INST]",
		"llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAgain<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\n",
		"mistral":  "<s>[INST] Be brief.\n\nHi[/INST]Hello.</s>[INST] Again[/INST]",
		"gemma":    "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nAgain<end_of_turn>\n<start_of_turn>model\n",
		"phi3":     "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nAgain<|end|>\n<|assistant|>\n",
		"zephyr":   "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello.</s>\n<|user|>\nAgain</s>\n<|assistant|>\n",
		"deepseek": "<s>Be brief.\n\nUser: Hi\n\nAssistant: Hello.</s>User: Again\n\nAssistant:",
	}
	for _, name := range BuiltinTemplates() {
		src, err := BuiltinTemplate(name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := newChatTemplate(src, "<s>", "</s>")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := c.render(msgs, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if w, ok := want[name]; !ok {
			t.Errorf("%s: no expected rendering", name)
		} else if got != w {
			t.Errorf("%s:\n got %q\nwant %q", name, got, w)
		}
	}
	if len(BuiltinTemplates()) != len(want) {
		t.Errorf("built in: %v", BuiltinTemplates())
	}
	if _, err := BuiltinTemplate("../templates/chatml"); err == nil {
		t.Error("a path was taken for a template name")
	}
}
