// torch.randn(size, generator=torch.Generator().manual_seed(seed)) on the CPU, reproduced in the
// page so that a seed gives the latents `ganops sample --seed S` uses: the generator is mt19937;
// 16 or more values are filled with 24-bit uniforms turned into normals by Box-Muller over
// blocks of 16 (the last block redrawn when the size is not a multiple of 16); fewer values take
// torch's scalar path (53-bit uniforms, Box-Muller with the second value cached).

export class MT19937 {
  constructor(seed) {
    this.mt = new Uint32Array(624);
    this.index = 624;
    this.mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = this.mt[i - 1] ^ (this.mt[i - 1] >>> 30);
      // 1812433253 * prev + i, in 32 bits
      this.mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  twist() {
    const mt = this.mt;
    for (let i = 0; i < 624; i++) {
      const y = (mt[i] & 0x80000000) | (mt[(i + 1) % 624] & 0x7fffffff);
      let v = mt[(i + 397) % 624] ^ (y >>> 1);
      if (y & 1) v ^= 0x9908b0df;
      mt[i] = v >>> 0;
    }
    this.index = 0;
  }

  next() {
    if (this.index >= 624) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

const f32 = Math.fround;
const TWO_PI_F = f32(2 * Math.PI);

function uniform24(rng) {
  return f32((rng.next() & 0xffffff) * 2 ** -24);
}

function fill16(d, o) {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - d[o + j]);
    const u2 = d[o + j + 8];
    const radius = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
    const theta = f32(TWO_PI_F * u2);
    d[o + j] = f32(radius * f32(Math.cos(theta)));
    d[o + j + 8] = f32(radius * f32(Math.sin(theta)));
  }
}

function uniform53(rng) {
  const hi = rng.next();
  const lo = rng.next();
  // (hi << 32 | lo) & (2^53 - 1), times 2^-53
  return ((hi & 0x1fffff) * 2 ** 32 + lo) * 2 ** -53;
}

/** size float32 normals from a fresh generator seeded with `seed` (0 <= seed < 2^32). */
export function torchRandn(size, seed) {
  const rng = new MT19937(seed);
  const d = new Float32Array(size);
  if (size >= 16) {
    for (let i = 0; i < size; i++) d[i] = uniform24(rng);
    for (let i = 0; i + 16 <= size; i += 16) fill16(d, i);
    if (size % 16 !== 0) {
      for (let i = size - 16; i < size; i++) d[i] = uniform24(rng);
      fill16(d, size - 16);
    }
    return d;
  }
  let cached = null;
  for (let i = 0; i < size; i++) {
    if (cached !== null) {
      d[i] = cached;
      cached = null;
      continue;
    }
    const u1 = uniform53(rng);
    const u2 = uniform53(rng);
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    cached = r * Math.sin(theta);
    d[i] = r * Math.cos(theta);
  }
  return d;
}
