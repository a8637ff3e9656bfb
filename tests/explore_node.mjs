// Runs an explorer bundle's generator.onnx under Node with onnxruntime-web (no browser):
// latents from the page's own torch-compatible randn, one per seed; prints the images as JSON.
// usage: node tests/explore_node.mjs BUNDLE_DIR SEED [SEED...]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as ort from 'onnxruntime-web';

const [bundle, ...seeds] = process.argv.slice(2);
const { torchRandn } = await import(pathToFileURL(join(bundle, 'randn.js')).href);
const info = JSON.parse(readFileSync(join(bundle, 'explorer.json'), 'utf8'));
ort.env.wasm.numThreads = 1;
const session = await ort.InferenceSession.create(readFileSync(join(bundle, 'generator.onnx')));
const Z = info.latent_dim;
const z = new Float32Array(seeds.length * Z);
seeds.forEach((s, i) => z.set(torchRandn(Z, Number(s)), i * Z));
const feeds = { z: new ort.Tensor('float32', z, [seeds.length, Z]) };
if (info.conditional) feeds.label = new ort.Tensor('int64', new BigInt64Array(seeds.length), [seeds.length]);
const out = await session.run(feeds);
const images = out[session.outputNames[0]];
console.log(JSON.stringify({ latents: Array.from(z), dims: images.dims, data: Array.from(images.data) }));
