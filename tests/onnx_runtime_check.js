#!/usr/bin/env node
// Runs an exported ReID ONNX model with ONNX Runtime (npm's onnxruntime-node) the way a consumer
// does: one session, the `images` input from a float32 .npy (its first dimension is the batch),
// `camids` from an int64 .npy when the model has SIE, the `features` output written as a float32
// .npy. Used by trainer_onnx_runtime_test to compare ONNX Runtime with LibTorch.
//
// Usage: node tests/onnx_runtime_check.js [--ort-dir DIR] MODEL.onnx IMAGES.npy OUT.npy
//          [CAMIDS.npy]
//   --ort-dir: the npm prefix holding node_modules/onnxruntime-node. Without it: build-tools/ort
//   of this repository (where scripts/install-onnxruntime.sh puts it), else node's own module
//   search (NODE_PATH).
// CAMIDS.npy is ignored when the model has no `camids` input.
// Exit status: 0 done; 77 onnxruntime-node cannot be loaded (the caller skips); 1 any other error.
'use strict';

const fs = require('fs');
const path = require('path');

const SKIP = 77;

// Parses a C-order .npy (format 1.0 / 2.0) of float32 or int64 -> {dtype, shape, data}.
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || buf.toString('latin1', 0, 6) !== '\x93NUMPY') {
    throw new Error(`${file}: not a .npy file`);
  }
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shape) throw new Error(`${file}: bad .npy header ${header}`);
  if (fortran[1] !== 'False') throw new Error(`${file}: Fortran order is not supported`);
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  // Copy into an aligned buffer: the typed array views need 4- / 8-byte alignment.
  const body =
      new Uint8Array(buf.buffer.slice(buf.byteOffset + offset, buf.byteOffset + buf.length));
  if (descr[1] === '<f4') {
    if (body.byteLength !== 4 * count) throw new Error(`${file}: size does not match its shape`);
    return {dtype: 'float32', dims, data: new Float32Array(body.buffer, body.byteOffset, count)};
  }
  if (descr[1] === '<i8') {
    if (body.byteLength !== 8 * count) throw new Error(`${file}: size does not match its shape`);
    return {dtype: 'int64', dims, data: new BigInt64Array(body.buffer, body.byteOffset, count)};
  }
  throw new Error(`${file}: dtype ${descr[1]} is not float32 or int64`);
}

// Writes a float32 .npy (format 1.0, header padded to a multiple of 64 bytes).
function writeNpy(file, data, dims) {
  const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, ' ') + '\n';
  const pre = Buffer.alloc(10);
  Buffer.from('\x93NUMPY', 'latin1').copy(pre, 0);
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const values = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), values]));
}

async function main() {
  const args = process.argv.slice(2);
  let ortDirs = [path.join(__dirname, '..', 'build-tools', 'ort'), null];  // null: NODE_PATH
  if (args[0] === '--ort-dir') {
    ortDirs = [args[1]];
    args.splice(0, 2);
  }
  if (args.length < 3 || args.length > 4) {
    console.error('usage: onnx_runtime_check.js [--ort-dir DIR] MODEL.onnx IMAGES.npy OUT.npy ' +
                  '[CAMIDS.npy]');
    return 1;
  }
  const [modelPath, imagesPath, outPath, camidsPath] = args;
  let ort;
  const errors = [];
  for (const dir of ortDirs) {
    try {
      const where = dir === null ? 'onnxruntime-node'
                                 : path.join(path.resolve(dir), 'node_modules', 'onnxruntime-node');
      ort = require(where);
      break;
    } catch (e) {
      errors.push(`${dir === null ? 'NODE_PATH' : dir}: ${e.message.split('\n')[0]}`);
    }
  }
  if (!ort) {
    console.log(`SKIP: onnxruntime-node cannot be loaded (${errors.join('; ')})`);
    return SKIP;
  }
  const session = await ort.InferenceSession.create(modelPath, {executionProviders: ['cpu']});
  const images = readNpy(imagesPath);
  if (images.dtype !== 'float32' || images.dims.length !== 4) {
    throw new Error(`${imagesPath}: expected float32 (N, 3, H, W)`);
  }
  const feeds = {images: new ort.Tensor('float32', images.data, images.dims)};
  if (session.inputNames.includes('camids')) {
    if (!camidsPath) throw new Error('the model has SIE: CAMIDS.npy is required');
    const cams = readNpy(camidsPath);
    if (cams.dtype !== 'int64' || cams.dims.length !== 1 || cams.dims[0] !== images.dims[0]) {
      throw new Error(`${camidsPath}: expected int64 (${images.dims[0]})`);
    }
    feeds.camids = new ort.Tensor('int64', cams.data, cams.dims);
  }
  const result = await session.run(feeds);
  const features = result.features;
  if (!features) throw new Error(`no 'features' output (outputs: ${session.outputNames})`);
  writeNpy(outPath, features.data, features.dims);
  console.log(`onnxruntime-node ${ort.env.versions ? ort.env.versions.node : '?'}: inputs ` +
              `[${session.inputNames}] -> features [${features.dims}]`);
  return 0;
}

main().then((code) => process.exit(code), (e) => {
  console.error(`onnx_runtime_check: ${e && e.message ? e.message : e}`);
  process.exit(1);
});
