// The page: pick a model (or ?model=URL) and a source (camera or file), stream frames through it.
// ?source=camera starts the camera at once; ?report=N keeps the first N frames' inputs and logits in
// window.tsmReport (what tests/streaming/test_web_demo.py reads) and sets window.tsmDone after them.
import { PredictionSmoother, StreamSession, preprocess, softmax } from "./tsm_stream.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const video = $("video");
const canvas = $("input");
const reportFrames = Number(params.get("report") || 0);
window.tsmReport = [];
window.tsmDone = false;

let session = null;
let smoother = null;
let running = false;
const latencies = [];

function fail(error) {
  $("error").textContent = String(error.message || error);
  window.tsmError = $("error").textContent;
}

async function loadModel(bytes, name) {
  session = await StreamSession.create(bytes);
  smoother = new PredictionSmoother(Number(params.get("window") || 4), Number(params.get("agree") || 3));
  $("model-name").textContent = `${name}: ${session.info.class_names.length} classes, ` +
    `${session.info.input_size}x${session.info.input_size}, ${session.bufferSpecs.length} shift buffers`;
  $("backend").textContent = `wasm, ${globalThis.crossOriginIsolated ? "threads" : "1 thread"}`;
  $("error").textContent = "";
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

function show(label, mean) {
  const names = session.info.class_names;
  $("label").textContent = names[label];
  const ranked = mean.map((p, k) => [p, k]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  $("top").innerHTML = "";
  for (const [p, k] of ranked) {
    const item = document.createElement("li");
    item.textContent = `${names[k]} ${p.toFixed(2)}`;
    $("top").append(item);
  }
  $("frames").textContent = String(latencies.length);
  $("latency").textContent = median(latencies).toFixed(1);
}

async function loop() {
  if (!running) return;
  if (video.readyState >= 2 && !video.paused && !video.ended) {
    const frame = preprocess(video, video.videoWidth, video.videoHeight, session.info, canvas);
    const start = performance.now();
    const logits = await session.step(frame);
    latencies.push(performance.now() - start);
    const { label, mean } = smoother.update(softmax(logits));
    show(label, mean);
    if (window.tsmReport.length < reportFrames) {
      window.tsmReport.push({ input: Array.from(frame), logits, latency_ms: latencies.at(-1), label });
      if (window.tsmReport.length === reportFrames) {
        running = false;  // the page keeps showing the last reported frame's prediction
        window.tsmDone = true;
      }
    }
  }
  requestAnimationFrame(loop);
}

async function play(setSource) {
  if (!session) return fail("choose a stream-mode ONNX model first");
  running = false;
  setSource();
  await video.play();
  session.reset();
  running = true;
  loop();
}

$("model-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  try { await loadModel(await file.arrayBuffer(), file.name); } catch (error) { fail(error); }
});
$("camera").addEventListener("click", () => startCamera().catch(fail));
$("video-file").addEventListener("change", (event) => {
  const url = URL.createObjectURL(event.target.files[0]);
  play(() => { video.srcObject = null; video.src = url; video.loop = true; }).catch(fail);
});

async function startCamera() {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  await play(() => { video.src = ""; video.srcObject = stream; });
}

async function start() {
  const model = params.get("model");
  if (!model) return;
  const response = await fetch(model);
  if (!response.ok) throw new Error(`could not fetch the model ${model}: HTTP ${response.status}`);
  await loadModel(await response.arrayBuffer(), model);
  if (params.get("source") === "camera") await startCamera();
}

start().catch(fail);
