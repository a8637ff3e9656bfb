// The ganops explorer: runs the exported generator with onnxruntime-web (single-threaded
// WebAssembly) and keeps everything the person sees in the URL, so a link reproduces it.
import * as ort from './ort/ort.wasm.min.mjs';
import { MT19937, torchRandn } from './randn.js';

ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
ort.env.wasm.numThreads = 1;

const $ = (id) => document.getElementById(id);
const T0 = performance.now();
const api = { timings: {}, state: null, info: null };
window.explorer = api;

// ---------------------------------------------------------------- state <-> URL
function encodeFloats(arr) {
  const bytes = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function decodeFloats(text) {
  const b = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  const bytes = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) bytes[i] = b.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

function readState(info) {
  const q = new URLSearchParams(location.hash.slice(1));
  const num = (k, d) => (q.has(k) && q.get(k) !== '' && !Number.isNaN(Number(q.get(k))) ? Number(q.get(k)) : d);
  const n = [16, 36, 64].includes(num('n', 16)) ? num('n', 16) : 16;
  const s = {
    n,
    seed: Math.max(0, Math.min(4294967295, Math.floor(num('seed', 0)))),
    cls: Math.max(0, Math.floor(num('cls', 0))),
    psi: num('psi', 1),
    mut: num('mut', 0.5),
    gen: Math.max(0, Math.floor(num('gen', 0))),
    pick: (q.get('pick') || '').split(',').filter((x) => x !== '').map(Number).filter((i) => i >= 0 && i < n).slice(0, 2),
    dirs: (q.get('dirs') || '').split(',').filter((x) => x !== '').map(Number),
    interp: q.get('interp') === '1',
    genes: null,
  };
  if (s.gen > 0 && q.get('genes')) {
    const g = decodeFloats(q.get('genes'));
    if (g.length === n * info.latent_dim) s.genes = g;
    else s.gen = 0;
  } else s.gen = 0;
  return s;
}

function writeState(s) {
  const q = new URLSearchParams();
  q.set('n', s.n); q.set('seed', s.seed);
  if (api.info.conditional) q.set('cls', s.cls);
  if (api.info.kind === 'style') q.set('psi', s.psi);
  q.set('mut', s.mut);
  if (s.pick.length) q.set('pick', s.pick.join(','));
  if (s.dirs.some((v) => v !== 0)) q.set('dirs', s.dirs.join(','));
  if (s.interp) q.set('interp', '1');
  if (s.gen > 0) { q.set('gen', s.gen); q.set('genes', encodeFloats(s.genes)); }
  history.replaceState(null, '', '#' + q.toString());
}

// ---------------------------------------------------------------- models
let sessions = {};

async function load(info) {
  const opts = { executionProviders: ['wasm'] };
  for (const file of Object.keys(info.models)) {
    sessions[file] = await ort.InferenceSession.create(file, opts);
  }
}

async function run(file, feeds) {
  const out = await sessions[file].run(feeds);
  return out[sessions[file].outputNames[0]];
}

/** Latents (B*Z) -> images tensor data (B, C, H, W) in [-1, 1]. */
async function generate(latents, count, s) {
  const info = api.info;
  const Z = info.latent_dim;
  const z = new ort.Tensor('float32', latents, [count, Z]);
  if (info.kind === 'style') {
    const w = (await run('mapping.onnx', { z })).data;
    const styles = styleEdit(w, count, s);
    return (await run('synthesis.onnx', { w: new ort.Tensor('float32', styles, [count, Z]) })).data;
  }
  const feeds = { z };
  if (info.conditional) feeds.label = new ort.Tensor('int64', new BigInt64Array(count).fill(BigInt(s.cls)), [count]);
  return (await run('generator.onnx', feeds)).data;
}

/** StyleGAN: truncate w towards w_avg by psi (as sampling does), then nothing else. */
function styleEdit(w, count, s) {
  const avg = api.info.w_avg;
  const W = avg.length;
  const out = new Float32Array(w.length);
  for (let b = 0; b < count; b++) {
    for (let k = 0; k < W; k++) {
      const a = avg[k];
      out[b * W + k] = Math.fround(a + s.psi * (w[b * W + k] - a));
    }
  }
  return out;
}

// ---------------------------------------------------------------- drawing
function toCanvas(data, index, canvas) {
  const { channels: C, image_size: H } = api.info;
  const Wd = H;
  canvas.width = Wd; canvas.height = H;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(Wd, H);
  const base = index * C * H * Wd;
  for (let p = 0; p < H * Wd; p++) {
    for (let c = 0; c < 3; c++) {
      const v = data[base + (C === 1 ? 0 : c) * H * Wd + p];
      img.data[p * 4 + c] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
    }
    img.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

function downloadLink(canvas, name) {
  const a = document.createElement('a');
  a.textContent = '⬇';
  a.title = 'download PNG';
  a.href = '#';
  a.download = name;
  a.addEventListener('click', (e) => { e.stopPropagation(); a.href = canvas.toDataURL('image/png'); });
  return a;
}

// ---------------------------------------------------------------- latent page
function population(s) {
  const Z = api.info.latent_dim;
  if (s.gen > 0) return s.genes;
  const genes = new Float32Array(s.n * Z);
  for (let i = 0; i < s.n; i++) genes.set(torchRandn(Z, (s.seed + i) >>> 0), i * Z);
  return genes;
}

function gene(s, i) {
  const Z = api.info.latent_dim;
  return population(s).slice(i * Z, (i + 1) * Z);
}

/** GANBreeder's loop: each child crosses the parents' genes over and mutates them. */
function breed(s) {
  const Z = api.info.latent_dim;
  const [a, b] = [gene(s, s.pick[0]), gene(s, s.pick[s.pick.length - 1])];
  const breedSeed = (Math.imul(s.seed + 1, 1000003) + Math.imul(s.gen + 1, 7919)) >>> 0;
  const rng = new MT19937(breedSeed);
  const children = new Float32Array(s.n * Z);
  const m = s.mut;
  const keep = Math.sqrt(Math.max(0, 1 - m * m)); // keeps the latents' unit variance
  for (let c = 0; c < s.n; c++) {
    const noise = torchRandn(Z, (breedSeed + 1 + c) >>> 0);
    for (let k = 0; k < Z; k++) {
      const parent = rng.next() & 1 ? a[k] : b[k];
      children[c * Z + k] = Math.fround(keep * parent + m * noise[k]);
    }
  }
  return children;
}

function slerp(a, b, t) {
  let dot = 0, na = 0, nb = 0;
  for (let k = 0; k < a.length; k++) { dot += a[k] * b[k]; na += a[k] * a[k]; nb += b[k] * b[k]; }
  const omega = Math.acos(Math.max(-1, Math.min(1, dot / Math.sqrt(na * nb))));
  const out = new Float32Array(a.length);
  if (omega < 1e-6) { for (let k = 0; k < a.length; k++) out[k] = a[k] + t * (b[k] - a[k]); return out; }
  const sa = Math.sin((1 - t) * omega) / Math.sin(omega), sb = Math.sin(t * omega) / Math.sin(omega);
  for (let k = 0; k < a.length; k++) out[k] = sa * a[k] + sb * b[k];
  return out;
}

function caption(s, i) {
  return s.gen > 0 ? `gen ${s.gen} · ${i}` : `seed ${(s.seed + i) >>> 0}`;
}

async function renderGrid(s) {
  const t = performance.now();
  const data = await generate(population(s), s.n, s);
  const grid = $('grid');
  grid.style.setProperty('--cols', Math.round(Math.sqrt(s.n)));
  grid.replaceChildren();
  for (let i = 0; i < s.n; i++) {
    const tile = document.createElement('div');
    tile.className = 'tile' + (s.pick.includes(i) ? ' picked' : '');
    tile.dataset.index = i;
    const canvas = toCanvas(data, i, document.createElement('canvas'));
    const cap = document.createElement('div');
    cap.className = 'caption';
    cap.textContent = caption(s, i);
    tile.append(canvas, cap, downloadLink(canvas, `${caption(s, i).replace(/[^a-z0-9]+/gi, '-')}.png`));
    tile.addEventListener('click', () => togglePick(i));
    grid.append(tile);
  }
  api.timings.grid = performance.now() - t;
  if (api.timings.firstImage === undefined) api.timings.firstImage = performance.now() - T0;
  api.gridImages = data;
}

async function renderStrip(s) {
  const box = $('strip-box');
  box.hidden = !(s.interp && s.pick.length === 2);
  if (box.hidden) return;
  const Z = api.info.latent_dim, steps = 8;
  const [a, b] = [gene(s, s.pick[0]), gene(s, s.pick[1])];
  const lat = new Float32Array(steps * Z);
  for (let j = 0; j < steps; j++) lat.set(slerp(a, b, j / (steps - 1)), j * Z);
  const data = await generate(lat, steps, s);
  $('strip').replaceChildren(...Array.from({ length: steps }, (_, j) => toCanvas(data, j, document.createElement('canvas'))));
}

async function renderFocus(s) {
  const box = $('focus-box');
  const dirs = api.info.directions;
  box.hidden = s.pick.length === 0;
  if (box.hidden) return;
  const Z = api.info.latent_dim;
  const base = gene(s, s.pick[0]);
  let data;
  const shift = new Float32Array(Z);
  dirs.components.forEach((v, k) => { const a = (s.dirs[k] || 0) * dirs.std[k]; for (let j = 0; j < Z; j++) shift[j] += a * v[j]; });
  if (api.info.kind === 'style') {
    const w = styleEdit((await run('mapping.onnx', { z: new ort.Tensor('float32', base, [1, Z]) })).data, 1, s);
    for (let j = 0; j < Z; j++) w[j] = Math.fround(w[j] + shift[j]);
    data = (await run('synthesis.onnx', { w: new ort.Tensor('float32', w, [1, Z]) })).data;
  } else {
    const z = new Float32Array(Z);
    for (let j = 0; j < Z; j++) z[j] = Math.fround(base[j] + shift[j]);
    data = await generate(z, 1, s);
  }
  const canvas = toCanvas(data, 0, document.createElement('canvas'));
  $('focus-tile').replaceChildren(canvas, downloadLink(canvas, 'direction-edit.png'));
}

function buildSliders(s) {
  const dirs = api.info.directions;
  $('dir-space').textContent = `(principal directions of ${dirs.space === 'w' ? 'W' : 'the latent space'}, ± 3 standard deviations)`;
  $('sliders').replaceChildren(...dirs.components.map((_, k) => {
    const label = document.createElement('label');
    const input = document.createElement('input');
    Object.assign(input, { type: 'range', min: -3, max: 3, step: 0.25, value: s.dirs[k] || 0 });
    input.dataset.k = k;
    input.addEventListener('change', () => { const st = api.state; st.dirs = dirs.components.map((_, j) => st.dirs[j] || 0); st.dirs[k] = Number(input.value); update(['focus']); });
    label.append(`direction ${k + 1} `, input);
    return label;
  }));
}

function togglePick(i) {
  const s = api.state;
  if (s.pick.includes(i)) s.pick = s.pick.filter((j) => j !== i);
  else s.pick = [...s.pick, i].slice(-2);
  s.dirs = []; s.interp = false;
  buildSliders(s);
  update(['picks', 'strip', 'focus']);
}

function syncControls(s) {
  $('n').value = String(s.n); $('seed').value = s.seed; $('cls').value = String(s.cls);
  $('psi').value = s.psi; $('psi-out').textContent = s.psi.toFixed(2);
  $('mut').value = s.mut; $('mut-out').textContent = s.mut.toFixed(2);
  $('breed').disabled = s.pick.length === 0;
  $('interp').disabled = s.pick.length !== 2;
  $('generation').textContent = s.gen > 0 ? `Generation ${s.gen}.` : '';
  for (const t of document.querySelectorAll('.tile')) t.classList.toggle('picked', s.pick.includes(Number(t.dataset.index)));
}

let busy = Promise.resolve();
function update(parts) {
  const s = api.state;
  writeState(s);
  syncControls(s);
  document.body.dataset.ready = '0';
  busy = busy.then(async () => {
    if (parts.includes('grid')) await renderGrid(s);
    if (parts.includes('strip') || parts.includes('grid')) await renderStrip(s);
    if (parts.includes('focus') || parts.includes('grid')) await renderFocus(s);
    syncControls(s);
    document.body.dataset.ready = '1';
  }).catch((e) => { $('status').textContent = 'error: ' + e.message; throw e; });
  return busy;
}
api.update = update;

function latentPage(info) {
  $('latent').hidden = false;
  const s = readState(info);
  api.state = s;
  if (info.conditional) {
    $('class-box').hidden = false;
    $('cls').replaceChildren(...info.class_names.map((name, i) => new Option(name, String(i))));
    if (s.cls >= info.class_names.length) s.cls = 0;
  }
  if (info.kind === 'style') $('psi-box').hidden = false;
  buildSliders(s);
  const reseed = (seed) => { Object.assign(s, { seed, gen: 0, genes: null, pick: [], dirs: [], interp: false }); buildSliders(s); update(['grid']); };
  $('n').addEventListener('change', () => { s.n = Number($('n').value); reseed(s.seed); });
  $('seed').addEventListener('change', () => reseed(Math.max(0, Math.min(4294967295, Math.floor(Number($('seed').value) || 0)))));
  $('new-grid').addEventListener('click', () => reseed(Math.floor(Math.random() * 1e6)));
  $('reset').addEventListener('click', () => reseed(s.seed));
  $('cls').addEventListener('change', () => { s.cls = Number($('cls').value); update(['grid']); });
  $('psi').addEventListener('input', () => { $('psi-out').textContent = Number($('psi').value).toFixed(2); });
  $('psi').addEventListener('change', () => { s.psi = Number($('psi').value); update(['grid']); });
  $('mut').addEventListener('input', () => { s.mut = Number($('mut').value); $('mut-out').textContent = s.mut.toFixed(2); writeState(s); });
  $('breed').addEventListener('click', () => {
    s.genes = breed(s); s.gen += 1; s.pick = []; s.dirs = []; s.interp = false;
    update(['grid']);
  });
  $('interp').addEventListener('click', () => { s.interp = true; update(['strip']); });
  api.latents = (i) => Array.from(gene(s, i));
  api.pixels = (i) => { const c = document.querySelectorAll('#grid canvas')[i]; return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); };
  return update(['grid']);
}

// ---------------------------------------------------------------- image-to-image page
function imagePage(info) {
  $('image').hidden = false;
  const size = info.input_size, C = info.input_channels;
  const inCanvas = $('input-canvas');
  const translate = async (source) => {
    document.body.dataset.ready = '0';
    inCanvas.width = size; inCanvas.height = size;
    const ctx = inCanvas.getContext('2d');
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(source, 0, 0, size, size);
    const px = ctx.getImageData(0, 0, size, size).data;
    const x = new Float32Array(C * size * size);
    for (let p = 0; p < size * size; p++) {
      const [r, g, b] = [px[p * 4], px[p * 4 + 1], px[p * 4 + 2]];
      if (C === 1) x[p] = (r === g && g === b ? r : 0.299 * r + 0.587 * g + 0.114 * b) / 127.5 - 1;
      else [r, g, b].forEach((v, c) => { x[c * size * size + p] = v / 127.5 - 1; });
    }
    const t = performance.now();
    const out = await run('generator.onnx', { input: new ort.Tensor('float32', x, [1, C, size, size]) });
    api.timings.translate = performance.now() - t;
    if (api.timings.firstImage === undefined) api.timings.firstImage = performance.now() - T0;
    toCanvas(out.data, 0, $('output-canvas'));
    api.output = out.data;
    $('output-download').href = $('output-canvas').toDataURL('image/png');
    document.body.dataset.ready = '1';
  };
  const fromFile = (file) => createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' }).then(translate);
  $('upload').addEventListener('change', () => { if ($('upload').files[0]) fromFile($('upload').files[0]); });
  document.body.addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
  document.body.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.body.addEventListener('drop', (e) => { e.preventDefault(); document.body.classList.remove('dragging'); if (e.dataTransfer.files[0]) fromFile(e.dataTransfer.files[0]); });
  $('examples').replaceChildren(...info.examples.map((src, i) => {
    const img = new Image();
    img.src = src; img.alt = `example ${i}`;
    img.addEventListener('click', () => translate(img));
    return img;
  }));
  const first = $('examples').firstChild;
  return new Promise((resolve) => { first.onload = () => translate(first).then(resolve); if (first.complete) first.onload(); });
}

// ---------------------------------------------------------------- start
async function main() {
  const info = await (await fetch('explorer.json')).json();
  api.info = info;
  $('title').textContent = `· ${info.family}` + (info.source ? ` · ${info.source}` : '');
  await load(info);
  $('status').textContent = info.kind === 'image'
    ? `${info.family}: image-to-image, ${info.input_size}px in, ${info.image_size}px out`
    : `${info.family}: ${info.latent_dim}-d latents, ${info.image_size}px images`;
  await (info.kind === 'image' ? imagePage(info) : latentPage(info));
}

main().catch((e) => { $('status').textContent = 'error: ' + e.message; document.body.dataset.ready = 'error'; console.error(e); });
