// Next-token probability vectors of headinfer against llama.cpp's (through
// node-llama-cpp, see ../shared/peers/llamacpp_node), step by step over a
// greedy continuation.
//
//   cd PEER_DIR && node HEADINFER/bench/probs.mjs [--backends cpu,vulkan] [--steps 16]
//       [--prompt TEXT] [--ctx 256] [--kv-type q8_0] [--json] MODEL...
//
// --kv-type runs both engines with that KV cache type for keys and values
// (llama.cpp with flash attention, which its quantized V cache needs).
//
// For each model, headinfer greedy-decodes --steps tokens from the prompt
// (`generate --temp 0 --logits-out`), which gives its prompt ids, its greedy
// ids and the logits row before each of them. llama.cpp then gets the same
// prompt ids and, after each step, headinfer's greedy id instead of its own
// (teacher forcing), so that both engines see the same context at every step.
// Its probabilities come from evaluateWithMetadata(..., {probabilities: true})
// with the greedy sampler: the softmax of its raw logits over the whole
// vocabulary. headinfer's are the softmax of its logits rows, in float64.
//
// Per step it prints:
//   rel    max |p_headinfer(t) / p_llama(t) - 1| over the tokens t among the
//          32 most likely of either engine;
//   margin (p1 - p2) / (p1 + p2) for llama.cpp's two most likely tokens;
//   same   whether the greedy ids agree (headinfer's emitted id against
//          llama.cpp's most likely token).
// If margin > rel the greedy ids must agree (each probability of either
// engine's top token is within rel of the other's), so a step with
// margin > rel and different ids means the comparison itself is broken;
// the summary counts those as "violations".
//
// Each llama.cpp backend runs in a child process of its own (the CPU and
// Vulkan prebuilts ship libraries with the same names). headinfer runs once
// per model. The binary is ../headinfer (go build -o headinfer .), or $HEADINFER.
import {execFileSync, spawnSync} from "node:child_process";
import {createRequire} from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const TOP = 32;
const self = fileURLToPath(import.meta.url);

if (process.argv[2] === "--child") await child(process.argv.slice(3));
else await main(process.argv.slice(2));

async function main(args) {
    const opts = {backends: "cpu", steps: "16", prompt: "Once upon a time", ctx: "256", "kv-type": "", json: false};
    const models = [];
    for (let i = 0; i < args.length; i++) {
        const a = args[i];
        if (a === "--json") opts.json = true;
        else if (a.startsWith("--")) {
            const key = a.slice(2);
            if (!(key in opts) || i + 1 >= args.length) throw new Error(`unknown option or missing value: ${a}`);
            opts[key] = args[++i];
        } else models.push(path.resolve(a));
    }
    if (models.length === 0) {
        console.error("usage: node probs.mjs [--backends cpu,vulkan] [--steps 16] [--prompt TEXT] [--ctx 256] [--kv-type T] [--json] MODEL...");
        process.exit(2);
    }
    const headinfer = process.env.HEADINFER ?? path.join(path.dirname(self), "..", "headinfer");
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "probs-"));
    const results = [];
    try {
        for (const model of models) {
            const logits = path.join(tmp, "logits.f32");
            let run;
            try {
                const kv = opts["kv-type"] ? ["--kv-type", opts["kv-type"]] : [];
                run = JSON.parse(execFileSync(headinfer, ["generate", "-m", model, "-p", opts.prompt, "-n", opts.steps,
                    "--temp", "0", "-c", opts.ctx, "--json", "--logits-out", logits, ...kv],
                    {encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20}));
            } catch (e) {
                results.push({model: path.basename(model), backend: "-", error: `headinfer failed: ${String(e.stderr ?? e.message).trim()}`});
                print(results.at(-1), opts.json);
                continue;
            }
            const runFile = path.join(tmp, "run.json");
            fs.writeFileSync(runFile, JSON.stringify({prompt_ids: run.prompt_ids, ids: run.ids}));
            for (const backend of opts.backends.split(",")) {
                const c = spawnSync(process.execPath, [self, "--child", backend, model, runFile, logits, opts.ctx, opts["kv-type"]],
                    {encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20});
                const line = c.stdout.split("\n").find((l) => l.startsWith("RESULT "));
                if (c.status !== 0 || !line) {
                    const err = (c.stderr + c.stdout).trim().split("\n").slice(-8).join("\n");
                    results.push({model: path.basename(model), backend, error: `llama.cpp failed: ${err || `exit status ${c.status}`}`});
                    print(results.at(-1), opts.json);
                    continue;
                }
                results.push({model: path.basename(model), backend, ...JSON.parse(line.slice(7))});
                print(results.at(-1), opts.json);
            }
        }
    } finally {
        fs.rmSync(tmp, {recursive: true, force: true});
    }
    if (!opts.json) {
        console.log("\nsummary: model | backend | steps | ids equal | max rel | median rel | steps margin>rel | violations");
        for (const r of results) {
            if (r.error) console.log(`${r.model} | ${r.backend} | error`);
            else console.log(`${r.model} | ${r.backend} | ${r.summary.steps} | ${r.summary.same} | ${pct(r.summary.maxRel)} | ` +
                `${pct(r.summary.medianRel)} | ${r.summary.decided} | ${r.summary.violations}`);
        }
    }
}

function print(r, json) {
    if (json) {
        console.log(JSON.stringify(r));
        return;
    }
    console.log(`\n== ${r.model}, llama.cpp ${r.backend}${r.device ? ` (${r.device})` : ""}`);
    if (r.error) {
        console.log(r.error);
        return;
    }
    console.log(`prompt ids ${JSON.stringify(r.promptIds)}`);
    console.log("step | headinfer id | llama.cpp id | same | p1 (llama.cpp) | margin | rel");
    for (const s of r.steps)
        console.log(`${s.step} | ${s.headinfer} | ${s.llama} | ${s.same ? "yes" : "NO"} | ${s.p1.toFixed(4)} | ${pct(s.margin)} | ${pct(s.rel)}`);
}

function pct(x) {
    return `${(100 * x).toFixed(x < 0.01 ? 3 : 2)} %`;
}

// child runs llama.cpp with one backend on headinfer's ids and compares.
async function child([backend, modelPath, runFile, logitsFile, ctx, kvType]) {
    const run = JSON.parse(fs.readFileSync(runFile, "utf8"));
    const raw = fs.readFileSync(logitsFile);
    const rows = run.ids.length;
    const vocab = raw.length / 4 / rows;
    if (!Number.isInteger(vocab)) throw new Error(`logits file of ${raw.length} bytes does not hold ${rows} rows`);
    const logits = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);

    if (backend === "vulkan") process.env.GGML_VK_VISIBLE_DEVICES ??= "0"; // lavapipe is a CPU-type device
    const nlc = pathToFileURL(createRequire(path.join(process.cwd(), "noop.js")).resolve("node-llama-cpp")).href;
    const {getLlama, LlamaLogLevel} = await import(nlc);
    const llama = await getLlama({gpu: backend === "vulkan" ? "vulkan" : false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1});
    const device = backend === "vulkan" ? (await llama.getGpuDeviceNames())[0] : "CPU";
    const model = await llama.loadModel({modelPath, gpuLayers: backend === "vulkan" ? "max" : 0});
    const kv = kvType ? {experimentalKvCacheKeyType: kvType.toUpperCase(), experimentalKvCacheValueType: kvType.toUpperCase(), flashAttention: true} : {};
    const context = await model.createContext({contextSize: Number(ctx), batchSize: Number(ctx), threads: 1, sequences: 1, ...kv});
    const seq = context.getSequence();

    const steps = [];
    const it = seq.evaluateWithMetadata(run.prompt_ids, {probabilities: true}, {temperature: 0, yieldEogToken: true});
    let next = await it.next();
    for (let k = 0; k < rows; k++) {
        if (next.done) throw new Error(`llama.cpp stopped after ${k} steps`);
        const q = next.value.probabilities; // Map token -> probability
        if (q.size !== vocab) throw new Error(`llama.cpp gave ${q.size} probabilities, headinfer ${vocab} logits`);
        steps.push(compare(k, softmax(logits.subarray(k * vocab, (k + 1) * vocab)), q, run.ids[k], next.value.token));
        if (k + 1 < rows) next = await it.next(run.ids[k]); // teacher forcing: headinfer's id, not llama.cpp's
    }
    await it.return();
    await context.dispose();
    await model.dispose();
    await llama.dispose();

    const rels = steps.map((s) => s.rel).sort((a, b) => a - b);
    const summary = {
        steps: steps.length,
        same: steps.filter((s) => s.same).length,
        maxRel: rels.at(-1),
        medianRel: rels[Math.floor((rels.length - 1) / 2)],
        decided: steps.filter((s) => s.margin > s.rel).length,
        violations: steps.filter((s) => s.margin > s.rel && !s.same).length,
    };
    console.log("RESULT " + JSON.stringify({device, promptIds: run.prompt_ids, steps, summary}));
}

function softmax(row) {
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    const p = new Float64Array(row.length);
    let sum = 0;
    for (let i = 0; i < row.length; i++) sum += p[i] = Math.exp(row[i] - max);
    for (let i = 0; i < row.length; i++) p[i] /= sum;
    return p;
}

// compare measures one step: p is headinfer's distribution (indexed by
// token), q llama.cpp's (a Map from token to probability).
function compare(step, p, q, headinferId, llamaId) {
    let argmax = 0;
    for (let i = 1; i < p.length; i++) if (p[i] > p[argmax]) argmax = i;
    if (argmax !== headinferId) throw new Error(`step ${step}: headinfer emitted ${headinferId} but its logits peak at ${argmax}`);
    const order = [...p.keys()].sort((a, b) => p[b] - p[a]);
    const llamaOrder = [...q.entries()].sort((a, b) => b[1] - a[1]);
    const tokens = new Set([...order.slice(0, TOP), ...llamaOrder.slice(0, TOP).map(([t]) => t)]);
    let rel = 0;
    for (const t of tokens) rel = Math.max(rel, Math.abs(p[t] / q.get(t) - 1));
    const [[, p1], [, p2]] = llamaOrder;
    return {step, headinfer: headinferId, llama: llamaId, same: headinferId === llamaId, p1, margin: (p1 - p2) / (p1 + p2), rel};
}
