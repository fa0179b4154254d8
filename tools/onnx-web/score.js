// Score rows with an exported loopml ONNX graph in ONNX Runtime Web (WebAssembly, one thread) inside a page.
// score.html?model=URL&feeds=URL fetches both from the same server (nothing from elsewhere: the runtime's
// .wasm comes from node_modules beside this file) and writes {"score": [...], "dims": [...]} into #result.
// FEEDS.json: {"column": {"type": "float64" | "string", "values": [...]}, ...}; each input is (N, 1);
// a missing number is null (NaN), a missing category the empty string (as tools/onnx-node/score.js).
"use strict";

async function fetchOk(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res;
}

async function main() {
  const q = new URLSearchParams(window.location.search);
  const modelUrl = q.get("model");
  const feedsUrl = q.get("feeds");
  if (!modelUrl || !feedsUrl) throw new Error("usage: score.html?model=MODEL.onnx&feeds=FEEDS.json");
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("node_modules/onnxruntime-web/dist/", window.location.href).href;
  const model = new Uint8Array(await (await fetchOk(modelUrl)).arrayBuffer());
  const spec = await (await fetchOk(feedsUrl)).json();
  const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
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
  document.getElementById("result").textContent = JSON.stringify({ score: Array.from(score.data), dims: score.dims });
  document.getElementById("status").textContent = "done";
}

main().catch((err) => {
  document.getElementById("error").textContent = String(err && err.stack ? err.stack : err);
  document.getElementById("status").textContent = "failed";
});
