// Next-token probability vectors of llama.cpp (through node-llama-cpp, see
// ../shared/peers/llamacpp_node) against headinfer's, over greedy steps.
//
//   cd PEER_DIR && node HEADINFER/bench/probs.mjs [--steps 16] [--top 32] MODEL [MODEL...]
//
// headinfer decodes greedily from the prompt and writes its logits before
// every generated token (--logits-out); llama.cpp's CPU backend evaluates the
// same prompt ids and is fed headinfer's tokens, so that both see the same
// context at every step even where their greedy choices part. For each step
// it prints the largest relative difference of the probabilities over
// llama.cpp's `--top` most likely tokens, the top-2 margin (of llama.cpp's
// probabilities), and whether the two greedy ids agree.
import {execFileSync} from "node:child_process";
import {createRequire} from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const args = process.argv.slice(2);
let steps = 16, top = 32;
while (args[0]?.startsWith("--")) {
    const [flag, value] = args.splice(0, 2);
    if (flag === "--steps") steps = Number(value);
    else if (flag === "--top") top = Number(value);
    else throw new Error(`unknown flag ${flag}`);
}
const prompt = "Once upon a time";
const ctx = 256;
const nlc = pathToFileURL(createRequire(path.join(process.cwd(), "noop.js")).resolve("node-llama-cpp")).href;
const {getLlama, LlamaLogLevel} = await import(nlc);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1});
const headinfer = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "headinfer");

for (const modelPath of args) {
    const model = await llama.loadModel({modelPath, gpuLayers: 0});
    const context = await model.createContext({contextSize: ctx, batchSize: ctx, threads: 1, sequences: 1});
    const seq = context.getSequence();
    const ids = [model.tokens.bos, ...model.tokenize(prompt)];

    const logitsFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "probs-")), "logits.f32");
    const out = JSON.parse(execFileSync(headinfer, ["generate", "-m", modelPath, "-p", prompt, "-n", String(steps),
        "--temp", "0", "-c", String(ctx), "--json", "--logits-out", logitsFile],
        {encoding: "utf8", stdio: ["ignore", "pipe", "ignore"]}));
    if (JSON.stringify(out.prompt_ids) !== JSON.stringify(ids))
        throw new Error(`${modelPath}: prompt ids differ: llama.cpp ${ids}, headinfer ${out.prompt_ids}`);
    const raw = fs.readFileSync(logitsFile);
    const vocab = raw.length / 4 / out.ids.length; // one row of logits per generated token
    const logits = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);

    const rows = [];
    const it = seq.evaluateWithMetadata(ids, {probabilities: true});
    let step = 0, replacement;
    while (step < out.ids.length) {
        const {value, done} = await it.next(replacement);
        if (done) break;
        // headinfer's softmax at this step, in float64.
        const row = logits.subarray(step * vocab, (step + 1) * vocab);
        let mx = -Infinity;
        for (const v of row) mx = Math.max(mx, v);
        let z = 0;
        for (const v of row) z += Math.exp(v - mx);
        const mine = (t) => Math.exp(row[t] - mx) / z;
        let argmax = 0;
        for (let t = 1; t < row.length; t++) if (row[t] > row[argmax]) argmax = t;

        const theirs = [...value.probabilities.entries()].sort((a, b) => b[1] - a[1]);
        let worst = 0, worstTok = -1;
        for (const [t, p] of theirs.slice(0, top)) {
            const d = Math.abs(mine(t) - p) / p;
            if (d > worst) [worst, worstTok] = [d, t];
        }
        const margin = theirs.length > 1 ? (theirs[0][1] - theirs[1][1]) / theirs[0][1] : 1;
        rows.push({step, ours: out.ids[step], argmax, theirs: theirs[0][0], worst, worstTok, margin});
        replacement = out.ids[step]; // llama.cpp continues from headinfer's token
        step++;
    }
    await it.return?.();
    const name = path.basename(modelPath);
    let worstAll = 0, agree = 0;
    for (const r of rows) {
        worstAll = Math.max(worstAll, r.worst);
        if (r.ours === r.theirs) agree++;
        console.log(`${name} step ${String(r.step).padStart(2)}: greedy ${r.ours === r.theirs ? "equal" : `differ (headinfer ${r.ours}, llama.cpp ${r.theirs})`}` +
            `, top-2 margin ${(100 * r.margin).toFixed(2)}%, largest relative difference over the top ${top} ${(100 * r.worst).toFixed(2)}% (token ${r.worstTok})`);
    }
    console.log(`RESULT ${JSON.stringify({model: name, steps: rows.length, greedyEqual: agree, worstRelDiff: worstAll})}`);
    await context.dispose();
    await model.dispose();
}
await llama.dispose();
