// A conservative estimate of what one step allocates, checked before any native allocation, so
// a shape that cannot fit fails with ERR_OUT_OF_MEMORY instead of taking the process down.
import * as os from 'node:os';
import { PerceptualLossError } from './errors';
import type { ModuleInfo } from './network';

const BYTES: Record<string, number> = { float32: 4, float64: 8, float16: 2, bfloat16: 2 };

/**
 * Bytes held at the peak of a loss-and-gradient step on an input of channels-first `shape`
 * ([n, c, h, w], or [n, c, d, h, w] for volumes): every module output of pred kept for the
 * backward pass (plus max-pool indices), the target's tap features, and a few buffers of the
 * largest activation for the gradient. `im2col`: the convs run as ATen's unfold + matrix product
 * (float64 on the CPU, where oneDNN does not serve), whose column buffer holds each input element
 * once per kernel tap (9 in 2-D, 27 in 3-D) for the whole batch, in the forward pass and again
 * for the input gradient.
 */
export function estimateStepBytes(modules: readonly ModuleInfo[], shape: readonly number[], dtype: string, im2col = false): number {
  const [n, c, ...spatial] = shape;
  const size = BYTES[dtype] ?? 4;
  const taps = 3 ** spatial.length;
  let channels = c;
  let sides = [...spatial];
  const volume = () => sides.reduce((a, b) => a * b, 1);
  let kept = n * c * volume();
  let largest = kept;
  let columns = 0;
  for (const m of modules) {
    if (m.kind === 'conv') {
      if (im2col) columns = Math.max(columns, n * channels * taps * volume());
      channels = m.outChannels!;
    }
    if (m.kind === 'pool') sides = sides.map((side) => Math.floor(side / 2));
    const elements = n * channels * volume();
    kept += elements * (m.kind === 'pool' ? 3 : 1); // indices are int64: two more floats' worth
    largest = Math.max(largest, elements);
  }
  return (kept * 2 + largest * 4 + columns) * size;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/**
 * Throws ERR_SHAPE for sizes past exact integers, ERR_OUT_OF_MEMORY past the device's memory.
 * `shape` is channels first; `role` and `given` (the shape as the caller gave it) name the input.
 */
export function checkFits(
  modules: readonly ModuleInfo[],
  shape: readonly number[],
  dtype: string,
  device: string,
  deviceBytes: number,
  role: string,
  given: readonly number[] = shape,
): void {
  const elements = shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(elements) || elements > 2 ** 48) {
    throw new PerceptualLossError('ERR_SHAPE', `${role} shape [${given.join(', ')}] has more elements than can be addressed.`);
  }
  const need = estimateStepBytes(modules, shape, dtype, device === 'cpu' && dtype === 'float64');
  if (need > deviceBytes) {
    throw new PerceptualLossError(
      'ERR_OUT_OF_MEMORY',
      `${role} of shape [${given.join(', ')}] needs about ${gib(need)} for one step, more than the ${gib(deviceBytes)} of the device; use smaller batches or tiles.`,
    );
  }
}

export function hostMemoryBytes(): number {
  return os.totalmem();
}
