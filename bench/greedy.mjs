// Greedy continuations of llama.cpp (through node-llama-cpp, see
// ../shared/peers/llamacpp_node) against headinfer's, token by token, up to
// the end of a 512-position context.
//
//   cd PEER_DIR && node HEADINFER/bench/greedy.mjs [--backend cpu|vulkan] MODEL "prompt" ...
//
// For each prompt it prints where the two first differ ("none": nowhere).
// Where they differ, compare with the other backend: llama.cpp's CPU and
// Vulkan backends themselves part at near-ties of the logits.
import {execFileSync} from "node:child_process";
import {createRequire} from "node:module";
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const args = process.argv.slice(2);
let backend = "cpu";
if (args[0] === "--backend") {
    backend = args[1];
    args.splice(0, 2);
}
const [modelPath, ...prompts] = args;
const ctx = 512;
if (backend === "vulkan") process.env.GGML_VK_VISIBLE_DEVICES ??= "0"; // lavapipe is a CPU-type device
const nlc = pathToFileURL(createRequire(path.join(process.cwd(), "noop.js")).resolve("node-llama-cpp")).href;
const {getLlama, LlamaLogLevel} = await import(nlc);
const llama = await getLlama({gpu: backend === "vulkan" ? "vulkan" : false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1});
const model = await llama.loadModel({modelPath, gpuLayers: backend === "vulkan" ? "max" : 0});
const context = await model.createContext({contextSize: ctx, batchSize: ctx, threads: 1, sequences: 1});
const seq = context.getSequence();
const headinfer = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "headinfer");
for (const prompt of prompts) {
    await seq.clearHistory();
    const ids = [model.tokens.bos, ...model.tokenize(prompt)];
    const want = [];
    for await (const tok of seq.evaluate(ids, {temperature: 0})) {
        if (tok === model.tokens.eos) break;
        want.push(tok);
        if (ids.length + want.length >= ctx) break;
    }
    const out = JSON.parse(execFileSync(headinfer, ["generate", "-m", modelPath, "-p", prompt, "-n", String(ctx - ids.length),
        "--temp", "0", "-c", String(ctx), "--json"], {encoding: "utf8", stdio: ["ignore", "pipe", "ignore"]}));
    const got = out.ids;
    let k = 0;
    while (k < Math.min(got.length, want.length) && got[k] === want[k]) k++;
    const same = JSON.stringify(out.prompt_ids) === JSON.stringify(ids);
    const at = k === got.length && k === want.length ? "none" : String(k);
    console.log(`${backend} ${JSON.stringify(prompt)}: prompt ${ids.length} tokens (ids equal: ${same}), llama.cpp ${want.length}, headinfer ${got.length} generated; first difference: ${at}`);
}
await context.dispose();
await model.dispose();
await llama.dispose();
