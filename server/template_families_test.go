package server

import "testing"

// The chat templates of the Gemma 2, Gemma 3 and Phi-3 instruct models as
// their GGUF files carry them (tokenizer.chat_template), rendered for a
// conversation with a system prompt and a generation prompt.
const (
	gemma2Template = `{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}`

	gemma3Template = `{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
`

	phi3Template = `{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}`
)

func TestFamilyTemplates(t *testing.T) {
	chat := []message{
		{Role: "user", Content: " Hi "},
		{Role: "assistant", Content: "Hello."},
		{Role: "user", Content: "Tell a story."},
	}
	withSystem := append([]message{{Role: "system", Content: "Be brief."}}, chat...)
	for _, tc := range []struct {
		name, template, bos, eos string
		msgs                     []message
		want                     string
	}{
		{"gemma2", gemma2Template, "<bos>", "<eos>", chat,
			"<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nTell a story.<end_of_turn>\n<start_of_turn>model\n"},
		{"gemma3", gemma3Template, "<bos>", "<eos>", withSystem,
			"<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nTell a story.<end_of_turn>\n<start_of_turn>model\n"},
		{"phi3", phi3Template, "<s>", "<|endoftext|>", withSystem,
			"<|system|>\nBe brief.<|end|>\n<|user|>\n Hi <|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nTell a story.<|end|>\n<|assistant|>\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newChatTemplate(tc.template, tc.bos, tc.eos)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.render(tc.msgs, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("rendered\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
	// Gemma 2 refuses a system message, as its template says.
	c, err := newChatTemplate(gemma2Template, "<bos>", "<eos>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.render(withSystem, nil); err == nil {
		t.Error("gemma2 rendered a system message")
	}
}
