// Online TSM in the browser: a stream-mode ONNX file (src/export.py mode=stream) run frame by frame by
// onnxruntime-web, its shift buffers carried from one call to the next as onnxruntime tensors.
// Class names, input size and normalisation come from the file's metadata (tsm_info); the smoothing is
// src/stream.py's (tsm.streaming.app.PredictionSmoother).
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";

ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
// threads need a cross-origin isolated page (src/serve_demo.py sends the headers)
ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

/** The length-delimited fields of one protobuf message, as [field number, bytes]; other wire types skipped. */
function protobufFields(data) {
  let pos = 0;
  const varint = () => {
    let value = 0, scale = 1;
    for (;;) {
      if (pos >= data.length) throw new Error("not an ONNX file (truncated protobuf)");
      const byte = data[pos++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
  };
  const fields = [];
  while (pos < data.length) {
    const key = varint(), number = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const length = varint();
      fields.push([number, data.subarray(pos, pos + length)]);
      pos += length;
    } else throw new Error(`not an ONNX file (protobuf wire type ${wire})`);
  }
  return fields;
}

/** The metadata_props of an ONNX ModelProto (field 14, each a StringStringEntryProto {1: key, 2: value}). */
export function onnxMetadata(bytes) {
  const text = new TextDecoder();
  const metadata = {};
  for (const [number, entry] of protobufFields(new Uint8Array(bytes))) {
    if (number !== 14) continue;
    const pair = Object.fromEntries(protobufFields(entry).map(([n, value]) => [n, text.decode(value)]));
    metadata[pair[1]] = pair[2] ?? "";
  }
  return metadata;
}

/** What running the file needs, from its metadata; throws naming what is missing. */
export function streamSpec(metadata) {
  if ((metadata.tsm_mode ?? "stream") !== "stream") {
    throw new Error(`this ONNX file is a ${metadata.tsm_mode}-mode export: export it with src/export.py mode=stream`);
  }
  const missing = ["tsm_mode", "tsm_buffers", "tsm_info"].filter((key) => !(key in metadata));
  if (missing.length) {
    throw new Error(`this ONNX file lacks the metadata ${missing.join(", ")}: export it with ` +
      "src/export.py mode=stream (files written before self-describing exports must be exported again)");
  }
  const info = JSON.parse(metadata.tsm_info);
  const needed = ["class_names", "input_size", "scale_size", "mean", "std"].filter((key) => !(key in info));
  if (needed.length) throw new Error(`the file's tsm_info lacks ${needed.join(", ")}`);
  if (Array.isArray(info.input_size)) throw new Error("the page streams square inputs only; export a square input_size");
  return { info, buffers: JSON.parse(metadata.tsm_buffers) };
}

/** Average the last `window` frames' probabilities; change the shown label after `agree` agreeing frames. */
export class PredictionSmoother {
  constructor(window = 4, agree = 3) {
    this.window = window;
    this.agree = agree;
    this.recent = [];
    this.label = null;
    this.candidate = null;
    this.streak = 0;
  }

  update(probs) {
    this.recent.push(probs);
    if (this.recent.length > this.window) this.recent.shift();
    const mean = probs.map((_, k) => this.recent.reduce((sum, p) => sum + p[k], 0) / this.recent.length);
    const top = mean.indexOf(Math.max(...mean));
    this.streak = top === this.candidate ? this.streak + 1 : 1;
    this.candidate = top;
    if (this.label === null || (top !== this.label && this.streak >= this.agree)) this.label = top;
    return { label: this.label, mean };
  }
}

export function softmax(logits) {
  const max = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

/** A stream-mode session: `step(frame)` takes a (1, 3, S, S) float32 array, returns that frame's logits. */
export class StreamSession {
  static async create(bytes) {
    const spec = streamSpec(onnxMetadata(bytes));
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    return new StreamSession(session, spec);
  }

  constructor(session, spec) {
    this.session = session;
    this.info = spec.info;
    this.bufferSpecs = spec.buffers;
    this.reset();
  }

  // each buffer's reset state: float32 zeros, or an int8 file's uint8 buffers filled with their zero point
  reset() {
    this.buffers = this.bufferSpecs.map(({ shape, dtype = "float32", zero_point: zeroPoint = 0 }) => {
      const dims = [1, ...shape.slice(1)];
      const size = dims.reduce((a, b) => a * b, 1);
      const values = dtype === "uint8" ? new Uint8Array(size).fill(zeroPoint) : new Float32Array(size);
      return new ort.Tensor(dtype, values, dims);
    });
  }

  async step(frame) {
    const size = this.info.input_size;
    const feeds = { frame: new ort.Tensor("float32", frame, [1, 3, size, size]) };
    this.bufferSpecs.forEach(({ name }, i) => { feeds[name] = this.buffers[i]; });
    const outputs = await this.session.run(feeds);
    // this call's buffer outputs are the next call's inputs, as onnxruntime tensors (never copied)
    this.buffers = this.bufferSpecs.map(({ name }) => outputs[`${name}_out`]);
    return Array.from(outputs.logits.data);
  }
}

/** A video frame as the model's input: short side to scale_size, centre crop, normalised, CHW float32. */
export function preprocess(source, width, height, info, canvas) {
  const scale = info.scale_size, crop = info.input_size;
  const [w, h] = width >= height ? [Math.trunc(scale * width / height), scale] : [scale, Math.trunc(scale * height / width)];
  canvas.width = crop;
  canvas.height = crop;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  const left = Math.round((w - crop) / 2), top = Math.round((h - crop) / 2);
  context.drawImage(source, -left, -top, w, h);
  const pixels = context.getImageData(0, 0, crop, crop).data;
  const out = new Float32Array(3 * crop * crop);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < crop * crop; i++) {
      out[c * crop * crop + i] = (pixels[4 * i + c] / 255 - info.mean[c]) / info.std[c];
    }
  }
  return out;
}
