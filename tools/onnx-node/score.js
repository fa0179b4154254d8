// Score rows with an exported loopml ONNX graph in ONNX Runtime for Node.js.
// usage: node score.js MODEL.onnx FEEDS.json  -> prints {"score": [...], "dims": [...]} on stdout
// FEEDS.json: {"column": {"type": "float64" | "string", "values": [...]}, ...}; each input is (N, 1);
// a missing number is null (NaN), a missing category the empty string.
"use strict";
const fs = require("fs");
const ort = require("onnxruntime-node");

async function main() {
  const [modelPath, feedsPath] = process.argv.slice(2);
  if (!modelPath || !feedsPath) {
    console.error("usage: node score.js MODEL.onnx FEEDS.json");
    process.exit(2);
  }
  // as loopml's Python sessions (SESSION_CONFIG in src/loopml/export/onnx_export.py): an int8 file's fused
  // DequantizeLinear + MatMul computes in float32, not with int8 activations
  const session = await ort.InferenceSession.create(modelPath, {
    intraOpNumThreads: 1,
    extra: { session: { qdq_matmulnbits_accuracy_level: "1" } },
  });
  const spec = JSON.parse(fs.readFileSync(feedsPath, "utf8"));
  const feeds = {};
  for (const [name, col] of Object.entries(spec)) {
    const n = col.values.length;
    if (col.type === "float64") {
      const data = Float64Array.from(col.values, (v) => (v === null ? NaN : v));
      feeds[name] = new ort.Tensor("float64", data, [n, 1]);
    } else {
      feeds[name] = new ort.Tensor("string", col.values.map(String), [n, 1]);
    }
  }
  const out = await session.run(feeds, ["score"]);
  const score = out.score;
  process.stdout.write(JSON.stringify({ score: Array.from(score.data), dims: score.dims }) + "\n");
}

main().catch((err) => {
  console.error(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
