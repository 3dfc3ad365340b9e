// Shared pieces of the volume and instance-mask tests: data moved between channels-first and
// channels-last layouts of any rank, a plain float64 3x3x3 convolution to check features
// against, the logistic function, and one instance of a batch.
import type { HostTensor } from '../../lib/index';

/** Channels first -> channels last, any rank: [N, C, ...S] -> [N, ...S, C]. */
export function toChannelsLast<A extends Float32Array | Float64Array | Uint8Array>(data: A, [n, c, ...spatial]: readonly number[]): A {
  const size = spatial.reduce((a, b) => a * b, 1);
  const out = new (data.constructor as new (length: number) => A)(data.length);
  for (let b = 0; b < n; b++) for (let k = 0; k < c; k++) for (let p = 0; p < size; p++) out[(b * size + p) * c + k] = data[(b * c + k) * size + p];
  return out;
}

/** Channels last -> channels first, any rank: [N, ...S, C] -> [N, C, ...S]. */
export function toChannelsFirst<A extends Float32Array | Float64Array | Uint8Array>(data: A, shape: readonly number[]): A {
  const [n, c] = [shape[0], shape[shape.length - 1]];
  const size = shape.slice(1, -1).reduce((a, b) => a * b, 1);
  const out = new (data.constructor as new (length: number) => A)(data.length);
  for (let b = 0; b < n; b++) for (let p = 0; p < size; p++) for (let k = 0; k < c; k++) out[(b * c + k) * size + p] = data[(b * size + p) * c + k];
  return out;
}

/** [N, C, D, H, W] as [N, D, H, W, C]. */
export const ndhwcShape = ([n, c, d, h, w]: readonly number[]) => [n, d, h, w, c];

/**
 * A 3x3x3 convolution, stride 1, padding 1, with bias, in float64: x [N, Cin, D, H, W], weight
 * [Cout, Cin, 3, 3, 3] and bias [Cout] as a torch Conv3d holds them.
 */
export function conv3d(x: ArrayLike<number>, [n, cin, d, h, w]: readonly number[], weight: ArrayLike<number>, bias: ArrayLike<number>): Float64Array {
  const cout = bias.length;
  const out = new Float64Array(n * cout * d * h * w);
  for (let b = 0; b < n; b++)
    for (let o = 0; o < cout; o++)
      for (let z = 0; z < d; z++)
        for (let y = 0; y < h; y++)
          for (let xx = 0; xx < w; xx++) {
            let sum = bias[o];
            for (let i = 0; i < cin; i++)
              for (let dz = -1; dz <= 1; dz++)
                for (let dy = -1; dy <= 1; dy++)
                  for (let dx = -1; dx <= 1; dx++) {
                    const [zz, yy, xs] = [z + dz, y + dy, xx + dx];
                    if (zz < 0 || zz >= d || yy < 0 || yy >= h || xs < 0 || xs >= w) continue;
                    sum += x[(((b * cin + i) * d + zz) * h + yy) * w + xs] * weight[(((o * cin + i) * 3 + dz + 1) * 3 + dy + 1) * 3 + dx + 1];
                  }
            out[(((b * cout + o) * d + z) * h + y) * w + xx] = sum;
          }
  return out;
}

/** The logistic function, elementwise, in float64. */
export function sigmoid(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(x, (v) => 1 / (1 + Math.exp(-v)));
}

/** Instance (sample) `i` of an [M, ...] host tensor, as a batch of one. */
export function instance<A extends Float32Array | Float64Array>(x: HostTensor<A>, i: number): HostTensor<A> {
  const size = x.data.length / x.shape[0];
  return { data: x.data.slice(i * size, (i + 1) * size) as A, shape: [1, ...x.shape.slice(1)] };
}

/** The largest |a - b| over the largest |b|: 0 for equal arrays. */
export function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}
