package server

import (
	"strings"
	"testing"
)

// llama2Template is the Llama-2 chat format: system prompt folded into the
// first user turn, roles that must alternate.
const llama2Template = `{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}` +
	`{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}` +
	`{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}` +
	`{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}`

func TestChatTemplate(t *testing.T) {
	c, err := newChatTemplate(llama2Template, "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.render([]message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: " Hi "},
		{Role: "assistant", Content: "Hello."},
		{Role: "user", Content: "Tell a story."},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Hello. </s><s>[INST] Tell a story. [/INST]"
	if got != want {
		t.Fatalf("rendered\n%q\nwant\n%q", got, want)
	}

	_, err = c.render([]message{{Role: "user", Content: "a"}, {Role: "user", Content: "b"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "roles must alternate") {
		t.Fatalf("raise_exception: got %v", err)
	}
}

// TestChatTemplateVariables checks add_generation_prompt and that
// chat_template_kwargs reach the template without replacing the
// server's variables.
func TestChatTemplateVariables(t *testing.T) {
	c, err := newChatTemplate(`{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}{{ flavour }}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.render([]message{{Role: "user", Content: "x"}}, map[string]any{"flavour": "!", "add_generation_prompt": false})
	if err != nil {
		t.Fatal(err)
	}
	if want := "<user>x<assistant>!"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestPlainPrompt(t *testing.T) {
	c, err := newChatTemplate("", "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := c.render([]message{{Role: "system", Content: "S"}, {Role: "user", Content: "U"}}, nil)
	if want := "system: S\nuser: U\nassistant:"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestChatTemplateDoesNotCompile(t *testing.T) {
	if _, err := newChatTemplate("{% for x in %}", "", ""); err == nil {
		t.Fatal("a broken template compiled")
	}
}
