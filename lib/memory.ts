// A conservative estimate of what one step allocates, checked before any native allocation, so
// a shape that cannot fit fails with ERR_OUT_OF_MEMORY instead of taking the process down.
import * as os from 'node:os';
import { PerceptualLossError } from './errors';
import type { ModuleInfo } from './network';

const BYTES: Record<string, number> = { float32: 4, float64: 8, float16: 2, bfloat16: 2 };

/**
 * Bytes held at the peak of a loss-and-gradient step on an [n, c, h, w] input: every module
 * output of pred kept for the backward pass (plus max-pool indices), the target's tap features,
 * and a few buffers of the largest activation for the gradient.
 */
export function estimateStepBytes(modules: readonly ModuleInfo[], shape: readonly number[], dtype: string): number {
  const [n, c, h, w] = shape;
  const size = BYTES[dtype] ?? 4;
  let channels = c;
  let height = h;
  let width = w;
  let kept = n * c * h * w;
  let largest = kept;
  for (const m of modules) {
    if (m.kind === 'conv') channels = m.outChannels!;
    if (m.kind === 'pool') {
      height = Math.floor(height / 2);
      width = Math.floor(width / 2);
    }
    const elements = n * channels * height * width;
    kept += elements * (m.kind === 'pool' ? 3 : 1); // indices are int64: two more floats' worth
    largest = Math.max(largest, elements);
  }
  return (kept * 2 + largest * 4) * size;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** Throws ERR_SHAPE for sizes past exact integers, ERR_OUT_OF_MEMORY past the device's memory. */
export function checkFits(modules: readonly ModuleInfo[], shape: readonly number[], dtype: string, deviceBytes: number, role: string): void {
  const elements = shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(elements) || elements > 2 ** 48) {
    throw new PerceptualLossError('ERR_SHAPE', `${role} shape [${shape.join(', ')}] has more elements than can be addressed.`);
  }
  const need = estimateStepBytes(modules, shape, dtype);
  if (need > deviceBytes) {
    throw new PerceptualLossError(
      'ERR_OUT_OF_MEMORY',
      `${role} of shape [${shape.join(', ')}] needs about ${gib(need)} for one step, more than the ${gib(deviceBytes)} of the device; use smaller batches or tiles.`,
    );
  }
}

export function hostMemoryBytes(): number {
  return os.totalmem();
}
