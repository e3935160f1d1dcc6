package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	sjs "github.com/santhosh-tekuri/jsonschema/v6"
	openai "github.com/sashabaranov/go-openai"
)

// toolSchemas are the parameters of the tools the tool tests offer,
// bounded so that a sampled call ends within the tokens it is given.
var toolSchemas = map[string]string{
	"get_weather": `{"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["C", "F"]},
		"days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "unit"], "additionalProperties": false}`,
	"get_time": `{"type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}}, "required": ["zone"], "additionalProperties": false}`,
}

func testTools() []openai.Tool {
	var tools []openai.Tool
	for _, name := range []string{"get_weather", "get_time"} {
		tools = append(tools, openai.Tool{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{
			Name: name, Description: "Look up " + strings.TrimPrefix(name, "get_"), Parameters: json.RawMessage(toolSchemas[name]),
		}})
	}
	return tools
}

// checkCalls checks calls against the tools: known names (only want, when
// set), ids, and arguments that are JSON valid against the schema.
func checkCalls(t *testing.T, what string, calls []openai.ToolCall, want string) {
	t.Helper()
	if len(calls) == 0 {
		t.Errorf("%s: no tool calls", what)
	}
	for i, c := range calls {
		schema, ok := toolSchemas[c.Function.Name]
		if !ok || (want != "" && c.Function.Name != want) || c.ID == "" || c.Type != openai.ToolTypeFunction {
			t.Errorf("%s: call %d %+v", what, i, c)
			continue
		}
		if err := validate(schema, c.Function.Arguments); err != nil {
			t.Errorf("%s: call %d of %s: arguments %s: %v", what, i, c.Function.Name, c.Function.Arguments, err)
		}
	}
}

// validate checks the JSON text doc against schema.
func validate(schema, doc string) error {
	s, err := sjs.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		return err
	}
	c := sjs.NewCompiler()
	if err := c.AddResource("schema.json", s); err != nil {
		return err
	}
	sch, err := c.Compile("schema.json")
	if err != nil {
		return err
	}
	inst, err := sjs.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

// streamChat runs a streamed chat request and puts its deltas together.
func streamChat(t *testing.T, c *openai.Client, req openai.ChatCompletionRequest) (content string, calls []openai.ToolCall, finish string) {
	t.Helper()
	req.Stream = true
	s, err := c.CreateChatCompletionStream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var text strings.Builder
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Choices) == 0 {
			continue
		}
		d := r.Choices[0].Delta
		text.WriteString(d.Content)
		for _, tc := range d.ToolCalls {
			if tc.Index == nil {
				t.Fatalf("a tool call delta without an index: %+v", tc)
			}
			i := *tc.Index
			switch {
			case i == len(calls):
				if tc.ID == "" || tc.Function.Name == "" {
					t.Errorf("the first delta of call %d lacks its id or name: %+v", i, tc)
				}
				calls = append(calls, openai.ToolCall{ID: tc.ID, Type: tc.Type, Function: openai.FunctionCall{Name: tc.Function.Name}})
			case i > len(calls) || i < 0:
				t.Fatalf("a delta for call %d after %d calls", i, len(calls))
			}
			calls[i].Function.Arguments += tc.Function.Arguments
		}
		if r.Choices[0].FinishReason != "" {
			finish = string(r.Choices[0].FinishReason)
		}
	}
	return text.String(), calls, finish
}

// TestServerTools calls tools on stories260K, which has no chat template
// and so gets the generic format: tool_choice required and a named
// function, sampled with a few seeds, whole and streamed; then the
// conversation goes on with the tool's result.
func TestServerTools(t *testing.T) {
	srv := startServer(t, "-m", filepath.Join(modelsDir(t), "stories260K.gguf"), "-c", "2048")
	c := srv.client("", nil)
	ctx := context.Background()
	msgs := []openai.ChatCompletionMessage{{Role: "user", Content: "What is the weather in Paris?"}}
	var first openai.ChatCompletionMessage
	for _, choice := range []struct {
		name   string
		choice any
		want   string
	}{
		{"required", "required", ""},
		{"named", openai.ToolChoice{Type: openai.ToolTypeFunction, Function: openai.ToolFunction{Name: "get_time"}}, "get_time"},
	} {
		for seed := 1; seed <= 3; seed++ {
			// One call: a model this small, free to go on, rarely ends a
			// list of calls (the parallel case is below).
			req := openai.ChatCompletionRequest{Messages: msgs, Tools: testTools(), ToolChoice: choice.choice, ParallelToolCalls: false,
				Temperature: 1, Seed: &seed, MaxTokens: 300}
			resp, err := c.CreateChatCompletion(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			what := fmt.Sprintf("%s, seed %d", choice.name, seed)
			ch := resp.Choices[0]
			if ch.FinishReason != openai.FinishReasonToolCalls || ch.Message.Content != "" || len(ch.Message.ToolCalls) != 1 {
				t.Fatalf("%s: finish %q, content %q, %d calls", what, ch.FinishReason, ch.Message.Content, len(ch.Message.ToolCalls))
			}
			checkCalls(t, what, ch.Message.ToolCalls, choice.want)
			if first.Role == "" {
				first = ch.Message
			}

			content, calls, finish := streamChat(t, c, req)
			if finish != "tool_calls" || content != "" {
				t.Errorf("%s streamed: finish %q, content %q", what, finish, content)
			}
			checkCalls(t, what+" streamed", calls, choice.want)
			// The same seed draws the same call, ids aside.
			if len(calls) == 1 && calls[0].Function != ch.Message.ToolCalls[0].Function {
				t.Errorf("%s: streamed %+v, whole %+v", what, calls[0].Function, ch.Message.ToolCalls[0].Function)
			}
		}
	}

	// Calls in a list, as parallel_tool_calls (the default) allows. Left
	// to itself a model this small never ends the list, so "," is biased
	// away: where the grammar also allows "]" the list ends, after one
	// call or more; where it allows nothing else "," still comes.
	status, body := srv.post(t, "/tokenize", "", []byte(`{"content": ","}`))
	var tok struct{ Tokens []int }
	if err := json.Unmarshal(body, &tok); status != 200 || err != nil || len(tok.Tokens) == 0 {
		t.Fatalf("tokenize: %d %s", status, body)
	}
	comma := strconv.Itoa(tok.Tokens[len(tok.Tokens)-1])
	for seed := 1; seed <= 2; seed++ {
		req := openai.ChatCompletionRequest{Messages: msgs, Tools: testTools(), ToolChoice: "required", Temperature: 1, Seed: &seed, MaxTokens: 300,
			LogitBias: map[string]int{comma: -100}}
		resp, err := c.CreateChatCompletion(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		ch := resp.Choices[0]
		if ch.FinishReason != openai.FinishReasonToolCalls {
			t.Errorf("parallel, seed %d: finish %q, content %q", seed, ch.FinishReason, ch.Message.Content)
		}
		checkCalls(t, fmt.Sprintf("parallel, seed %d", seed), ch.Message.ToolCalls, "")
		_, calls, finish := streamChat(t, c, req)
		if finish != "tool_calls" || len(calls) != len(ch.Message.ToolCalls) {
			t.Errorf("parallel, seed %d, streamed: finish %q, %d calls, whole %d", seed, finish, len(calls), len(ch.Message.ToolCalls))
		}
	}

	// The tool's result goes back: the history renders, with the tools
	// and without a constraint, and with a required call again.
	history := append(append([]openai.ChatCompletionMessage{}, msgs...), first,
		openai.ChatCompletionMessage{Role: "tool", ToolCallID: first.ToolCalls[0].ID, Content: "18 degrees and sunny"})
	seed := 4
	resp, err := c.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Messages: history, Tools: testTools(), Seed: &seed, MaxTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Usage.PromptTokens == 0 {
		t.Errorf("follow-up: %+v", resp)
	}
	resp, err = c.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Messages: history, Tools: testTools(), ToolChoice: "required", ParallelToolCalls: false, Temperature: 1, Seed: &seed, MaxTokens: 300})
	if err != nil {
		t.Fatal(err)
	}
	checkCalls(t, "follow-up, required", resp.Choices[0].Message.ToolCalls, "")

	// Bad tools are the client's error.
	status, body = srv.post(t, "/v1/chat/completions", "", []byte(`{"messages": [{"role": "user", "content": "a"}], "tools": `+
		`[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}}}]}`))
	checkError(t, "a schema the converter refuses", status, body, 400, "invalid_request_error", "invalid_schema")
	status, body = srv.post(t, "/v1/chat/completions", "", []byte(`{"messages": [{"role": "user", "content": "a"}], "tools": `+
		`[{"type": "function", "function": {"name": "f"}}], "tool_choice": "required", "response_format": {"type": "json_object"}}`))
	checkError(t, "a required call and response_format", status, body, 400, "invalid_request_error", "invalid_value")
}

// npmEnv, set to 1, lets TestServerToolsNode install the openai npm
// package into a temporary directory; npmDirEnv names a directory whose
// node_modules already holds it.
const (
	npmEnv    = "HEADINFER_NPM"
	npmDirEnv = "HEADINFER_NPM_DIR"
)

// TestServerToolsNode runs testdata/openai_tools.mjs, which calls the
// server with tools through the official openai npm client, whole and
// streamed (by hand and through the client's stream helper), and sends a
// tool's result back.
func TestServerToolsNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH")
	}
	dir := os.Getenv(npmDirEnv)
	switch {
	case dir != "":
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil {
			t.Fatalf("%s=%s: no node_modules/openai there", npmDirEnv, dir)
		}
	case os.Getenv(npmEnv) == "1":
		dir = t.TempDir()
		cmd := exec.Command("npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "openai")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm install openai: %v\n%s", err, out)
		}
	default:
		t.Skipf("the openai npm package is needed: set %s=1 to install it (npm reaches the registry), or %s to a directory whose node_modules has it", npmEnv, npmDirEnv)
	}
	// Bare imports resolve from the script's directory.
	script, err := os.ReadFile(filepath.Join("testdata", "openai_tools.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "headinfer_openai_tools.mjs")
	if err := os.WriteFile(run, script, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(run)

	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	srv := startServer(t, "-m", model, "-c", "2048")
	tools, _ := json.Marshal(testTools())
	cmd := exec.Command(node, run)
	cmd.Env = append(os.Environ(), "BASE_URL="+srv.url+"/v1", "MODEL=stories260K", "TOOLS="+string(tools))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	var res map[string]struct {
		FinishReason string                       `json:"finish_reason"`
		Message      openai.ChatCompletionMessage `json:"message"`
		Content      *string                      `json:"content"`
		ToolCalls    []openai.ToolCall            `json:"tool_calls"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("%s", out)
	for _, k := range []string{"whole", "helper"} {
		r := res[k]
		if r.FinishReason != "tool_calls" || r.Message.Content != "" {
			t.Errorf("%s: finish %q, content %q", k, r.FinishReason, r.Message.Content)
		}
		checkCalls(t, k, r.Message.ToolCalls, "")
	}
	for _, k := range []string{"whole", "helper"} {
		if n := len(res[k].Message.ToolCalls); n != 1 {
			t.Errorf("%s: parallel_tool_calls false, %d calls", k, n)
		}
	}
	s := res["streamed"]
	if s.FinishReason != "tool_calls" || s.Content == nil || *s.Content != "" {
		t.Errorf("streamed: finish %q, content %v", s.FinishReason, s.Content)
	}
	checkCalls(t, "streamed", s.ToolCalls, "get_time")
	if f := res["follow_up"]; f.FinishReason == "" {
		t.Errorf("follow-up: %+v", f)
	}
}
