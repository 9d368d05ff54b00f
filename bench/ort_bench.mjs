#!/usr/bin/env node
// ONNX Runtime inference timing for TESLA's peers (bench/README.md, "Inference peers").
//
//   node bench/ort_bench.mjs MODEL.onnx [--threads T] [--batch N] [--iters K] [--warmup W]
//   node bench/ort_bench.mjs MODEL.onnx --input X.f32 --dump-output Y.f32 [--batch N]
//
// Timing: one InferenceSession (CPU execution provider, intraOpNumThreads = T,
// interOpNumThreads = 1, graphOptimizationLevel 'all', executionMode 'sequential'), a fixed
// input of N samples (random in [0, 1), or --input), W untimed runs, then K timed
// `await session.run(feeds)` calls, each timed alone; prints one JSON line with the median.
// session.run in onnxruntime-node hops through setImmediate before the native call; the
// median of that hop alone is reported as js_hop_ms (it is inside median_ms).
//
// --dump-output Y.f32: run the input once and write the first output as raw float32 (little
// endian, row-major), then print a JSON line; no timing. --input X.f32: raw float32 input
// (its size must be a whole number of samples; the batch is the sample count unless --batch
// says otherwise).
//
// onnxruntime-node is loaded from bench/.ort/ (bench/fetch_ort.sh), or from ORT_NODE_DIR.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));

function die(msg, code = 1) {
  process.stderr.write(`ort_bench: error: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const a = { threads: 1, batch: null, iters: 200, warmup: 20, input: null, dump: null, model: null };
  const num = (k, v) => {
    const n = Number(v);
    if (!Number.isInteger(n)) die(`${k} wants an integer, got ${v}`, 2);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) die(`${k} needs a value`, 2);
      return argv[++i];
    };
    switch (k) {
      case '--threads': a.threads = num(k, next()); break;
      case '--batch': a.batch = num(k, next()); break;
      case '--iters': a.iters = num(k, next()); break;
      case '--warmup': a.warmup = num(k, next()); break;
      case '--input': a.input = next(); break;
      case '--dump-output': a.dump = next(); break;
      case '-h': case '--help':
        process.stdout.write('usage: node bench/ort_bench.mjs MODEL.onnx [--threads T] [--batch N] ' +
          '[--iters K] [--warmup W] [--input X.f32] [--dump-output Y.f32]\n');
        process.exit(0);
      default:
        if (k.startsWith('-') || a.model) die(`unexpected argument ${k}`, 2);
        a.model = k;
    }
  }
  if (!a.model) die('no MODEL.onnx given', 2);
  if (a.threads < 1 || a.iters < 1 || a.warmup < 0 || (a.batch !== null && a.batch < 1))
    die('--threads, --batch, --iters must be >= 1; --warmup >= 0', 2);
  return a;
}

function loadOrt() {
  const dir = process.env.ORT_NODE_DIR || join(here, '.ort', 'node_modules', 'onnxruntime-node');
  if (!existsSync(join(dir, 'package.json')))
    die(`onnxruntime-node not found in ${dir}: run bench/fetch_ort.sh once`);
  const require = createRequire(join(dir, 'package.json'));
  let ort;
  try {
    ort = require(dir);
  } catch (e) {
    die(`cannot load onnxruntime-node from ${dir} (is the native binding under ` +
        `bin/napi-v*/${process.platform}/${process.arch}/? rerun bench/fetch_ort.sh): ${e.message}`);
  }
  const version = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).version;
  return { ort, version };
}

function median(v) {
  const s = [...v].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// deterministic uniform [0, 1) floats (xorshift32), so every run times the same input
function randomFill(n, seed = 12345) {
  const x = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    x[i] = (s >>> 8) / 16777216;
  }
  return x;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const { ort, version } = loadOrt();
  const opts = {
    executionProviders: ['cpu'],
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  };
  let session;
  try {
    session = await ort.InferenceSession.create(a.model, opts);
  } catch (e) {
    die(`${a.model}: ${e.message}`);
  }
  const inName = session.inputNames[0];
  const outName = session.outputNames[0];
  const meta = session.inputMetadata && session.inputMetadata[0];
  if (!meta || !meta.shape) die(`${a.model}: the input's shape is not in the model's metadata`);
  const sampleDims = meta.shape.slice(1).map(Number);
  if (sampleDims.some((d) => !Number.isInteger(d) || d < 1))
    die(`${a.model}: input ${inName} has shape [${meta.shape}]; want a dynamic batch axis and fixed sample dims`);
  const per = sampleDims.reduce((p, d) => p * d, 1);

  let data;
  let batch = a.batch;
  if (a.input) {
    const buf = readFileSync(a.input);
    if (buf.length % (4 * per)) die(`${a.input}: ${buf.length} bytes is not a whole number of ${per}-float samples`);
    const have = buf.length / (4 * per);
    if (batch === null) batch = have;
    if (batch !== have) die(`${a.input} holds ${have} samples, --batch says ${batch}`);
    data = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
  } else {
    if (batch === null) batch = 1;
    data = randomFill(batch * per);
  }
  const feeds = { [inName]: new ort.Tensor('float32', data, [batch, ...sampleDims]) };

  if (a.dump) {
    const out = (await session.run(feeds))[outName];
    const y = out.data;
    writeFileSync(a.dump, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
    process.stdout.write(JSON.stringify({ engine: 'onnxruntime', version, batch, dumped: a.dump,
      output: outName, dims: out.dims }) + '\n');
    return;
  }

  let sink = 0;
  for (let i = 0; i < a.warmup; i++) sink += (await session.run(feeds))[outName].data[0];
  const ms = new Array(a.iters);
  for (let i = 0; i < a.iters; i++) {
    const t0 = process.hrtime.bigint();
    const r = await session.run(feeds);
    ms[i] = Number(process.hrtime.bigint() - t0) / 1e6;
    sink += r[outName].data[0];
  }
  const hop = new Array(Math.min(a.iters, 200));
  for (let i = 0; i < hop.length; i++) {
    const t0 = process.hrtime.bigint();
    await new Promise((res) => setImmediate(res));
    hop[i] = Number(process.hrtime.bigint() - t0) / 1e6;
  }
  const med = median(ms);
  process.stdout.write(JSON.stringify({
    engine: 'onnxruntime', version, batch, threads: a.threads,
    median_ms: Number(med.toFixed(5)), samples_per_s: Number((batch / (med / 1e3)).toFixed(1)),
    min_ms: Number(Math.min(...ms).toFixed(5)), iters: a.iters, warmup: a.warmup,
    js_hop_ms: Number(median(hop).toFixed(5)), model: a.model, node: process.version,
    cpu: os.cpus()[0] ? os.cpus()[0].model : null, sink: Number.isFinite(sink) ? 1 : 0,
  }) + '\n');
}

main().catch((e) => die(e.stack || String(e)));
