// Embeddings and tokenization of llama.cpp (through node-llama-cpp, see
// ../shared/peers/llamacpp_node), for comparison with headinfer's.
//
//   cd PEER_DIR && node HEADINFER/bench/embed.mjs [--ctx 512] MODEL < REQUEST.json
//
// REQUEST is {"texts": [...], "inputs": [[ids], ...]}. It prints one JSON
// line: {"tokens": [[ids], ...]} (each text tokenized as plain text,
// without special tokens), "bos" and "sep" (the ids llama.cpp puts around
// an input), and {"embeddings": [[...], ...]}: each input's embedding from
// an embedding context on the CPU backend, pooled as the model's
// pooling_type says (with none: the last token's vector), not normalised.
import {createRequire} from "node:module";
import fs from "node:fs";
import path from "node:path";
import {pathToFileURL} from "node:url";

const args = process.argv.slice(2);
let ctx = 512;
const models = [];
for (let i = 0; i < args.length; i++) {
    if (args[i] === "--ctx") ctx = Number(args[++i]);
    else models.push(path.resolve(args[i]));
}
if (models.length !== 1 || !(ctx > 0)) {
    console.error("usage: node embed.mjs [--ctx N] MODEL < REQUEST.json");
    process.exit(2);
}
const req = JSON.parse(fs.readFileSync(0, "utf8"));
const nlc = pathToFileURL(createRequire(path.join(process.cwd(), "noop.js")).resolve("node-llama-cpp")).href;
const {getLlama, LlamaLogLevel} = await import(nlc);
const llama = await getLlama({gpu: false, logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: models[0]});
const out = {tokens: [], embeddings: [], bos: model.tokens.bos ?? null, sep: model.tokens.sep ?? null};
for (const text of req.texts ?? []) out.tokens.push(Array.from(model.tokenize(text, false)));
const ec = await model.createEmbeddingContext({contextSize: ctx, batchSize: ctx});
for (const ids of req.inputs ?? []) {
    const e = await ec.getEmbeddingFor(ids);
    out.embeddings.push(Array.from(e.vector));
}
await ec.dispose();
await model.dispose();
console.log(JSON.stringify(out));
