// Runs a GGUF model on llama.cpp's CPU backend through node-llama-cpp and
// prints, as one JSON line, its greedy continuation of the given token ids
// and, at each step, the 32 most probable next tokens.
//
// Usage: node peer.mjs MODEL IDS N    (IDS: comma-separated token ids)
// node-llama-cpp is resolved from the working directory.
import {createRequire} from "node:module";
import path from "node:path";
import {pathToFileURL} from "node:url";

const [modelPath, idList, count] = process.argv.slice(2);
const nlc = pathToFileURL(createRequire(path.join(process.cwd(), "noop.js")).resolve("node-llama-cpp")).href;
const {getLlama, LlamaLogLevel} = await import(nlc);

const llama = await getLlama({gpu: false, build: "never", progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: 1});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const context = await model.createContext({contextSize: 512, batchSize: 512, threads: 1, sequences: 1});
const seq = context.getSequence();

const prompt = idList.split(",").map(Number);
const steps = [];
for await (const item of seq.evaluateWithMetadata(prompt, {probabilities: true}, {temperature: 0})) {
    const top = [...item.probabilities.entries()].sort((a, b) => b[1] - a[1]).slice(0, 32);
    steps.push({token: item.token, top: top.map(([id, p]) => ({id, p}))});
    if (steps.length >= Number(count)) break;
}
console.log(JSON.stringify({release: llama.llamaCppRelease.release, steps}));
await context.dispose();
await model.dispose();
