// Shared pieces of the API tests (test/api/): a small network with every tap kind, seeded host
// tensors, and the helpers that compare weights bit for bit and move data between layouts.
import { PerceptualLoss, type HostTensor, type PerceptualLossOptions } from '../../lib/index';
import { randn } from './random';
import { sha256OfFloat32 } from './reference';

export const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
export const host = (shape: number[], seed: number): HostTensor<Float32Array> => ({ data: randn(count(shape), seed), shape });

/** A small network with conv, relu and pool taps: fast, and every tap kind is exercised. */
export const SMALL: PerceptualLossOptions = { inChannels: 3, arch: [8, 'M', 16, 'M', 16], layers: ['conv1_1', 'relu2_1', 'pool2', 'relu3_1'] };
export const SHAPE = [2, 3, 16, 16];

/** sha256 of every weight and bias, in state-dict order: equal hashes mean bit-identical weights. */
export function weightBits(loss: PerceptualLoss): string {
  return sha256OfFloat32(Object.values(loss.stateDict()).map((t) => t.data));
}

/** [N, H, W, C] -> [N, C, H, W]. */
export function toNchw<A extends Float32Array | Float64Array>(data: A, [n, h, w, c]: number[]): A {
  const out = new (data.constructor as new (n: number) => A)(data.length);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let k = 0; k < c; k++) out[((i * c + k) * h + y) * w + x] = data[((i * h + y) * w + x) * c + k];
  return out;
}

/** Sample `i` of an [N, ...] host tensor, as a batch of one. */
export function sample(x: HostTensor<Float32Array>, i: number): HostTensor<Float32Array> {
  const size = count(x.shape) / x.shape[0];
  return { data: x.data.slice(i * size, (i + 1) * size), shape: [1, ...x.shape.slice(1)] };
}
