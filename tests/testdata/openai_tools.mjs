// Calls a headinfer server with tools through the official openai npm
// client and prints what it got as one JSON object. Run by
// TestServerToolsNode with BASE_URL and MODEL set, from a directory whose
// node_modules holds openai.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: "none", maxRetries: 0 });
const model = process.env.MODEL;
const tools = JSON.parse(process.env.TOOLS);
const messages = [{ role: "user", content: "What is the weather in Paris?" }];
// One call per answer: a model as small as the test's, free to go on,
// rarely ends a list of calls.
const base = { model, messages, tools, temperature: 1, max_tokens: 200, parallel_tool_calls: false };
const out = {};

// Not streamed, any tool.
const whole = await client.chat.completions.create({ ...base, seed: 1, tool_choice: "required" });
out.whole = { finish_reason: whole.choices[0].finish_reason, message: whole.choices[0].message };

// Streamed, one named tool: the deltas put together by hand.
const stream = await client.chat.completions.create({
  ...base, seed: 2, stream: true, tool_choice: { type: "function", function: { name: "get_time" } },
});
const calls = [];
let finish = null;
let content = "";
for await (const chunk of stream) {
  const choice = chunk.choices[0];
  if (!choice) continue;
  content += choice.delta.content ?? "";
  for (const d of choice.delta.tool_calls ?? []) {
    if (!calls[d.index]) calls[d.index] = { id: d.id, type: d.type, function: { name: d.function?.name, arguments: "" } };
    calls[d.index].function.arguments += d.function?.arguments ?? "";
  }
  finish = choice.finish_reason ?? finish;
}
out.streamed = { finish_reason: finish, content, tool_calls: calls };

// Streamed through the client's own accumulator, which checks the
// deltas' shape as it puts them together.
const helper = client.chat.completions.stream({ ...base, seed: 3, tool_choice: "required" });
const final = await helper.finalChatCompletion();
out.helper = { finish_reason: final.choices[0].finish_reason, message: final.choices[0].message };

// The tool's result sent back.
const call = whole.choices[0].message.tool_calls[0];
const followUp = await client.chat.completions.create({
  model, tools, max_tokens: 16, seed: 4, parallel_tool_calls: false,
  messages: [...messages, whole.choices[0].message, { role: "tool", tool_call_id: call.id, content: "18 degrees and sunny" }],
});
out.follow_up = { finish_reason: followUp.choices[0].finish_reason, message: followUp.choices[0].message };

console.log(JSON.stringify(out));
