// dtype 'bfloat16' on the CPU: allowed where the CPU has AVX512-BF16 or AMX-BF16 (read with cpuid at
// run time), refused with ERR_DTYPE naming the missing feature elsewhere. Host inputs and outputs
// stay float32; the loss and the per-tap reductions are computed in float32. Its error against the
// exact (float64) answer is compared with the error of PyTorch's own bf16 autocast on the same
// inputs (reference/cases.py).
import { beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, PerceptualLossError, Tensor, runtime, type PerceptualLossOptions } from '../../lib/index';
import { resolveOptions } from '../../lib/options';
import { randint, randn } from '../helpers/random';
import { relError, relErrorScalar, runReference, type RefCase, type RefResult } from '../helpers/reference';

const cpu = runtime().cpu;

/** bf16 keeps 8 bits of mantissa: the loss stays within this of the float32 loss. */
const LOSS_RTOL = 2e-2;
/** Ours may be this much worse than PyTorch's bf16 autocast, relative to its error, plus GRAD_ATOL. */
const GRAD_MARGIN = 1.25;
const GRAD_ATOL = 0.01;

interface Case {
  id: string;
  options: PerceptualLossOptions;
  shape: [number, number, number, number];
  segmentation?: { ignoreIndex: number };
}

const CASES: Case[] = [
  { id: 'vgg19-default', options: { inChannels: 3 }, shape: [2, 3, 32, 32] },
  { id: 'vgg11-l1-sum', options: { inChannels: 3, arch: 'vgg11', criterion: 'l1', reduction: 'sum' }, shape: [1, 3, 24, 24] },
  { id: 'vgg13-smoothl1-none', options: { inChannels: 2, arch: 'vgg13', criterion: 'smooth_l1', reduction: 'none' }, shape: [2, 2, 16, 20] },
  { id: 'vgg16-taps-avg', options: { inChannels: 3, arch: 'vgg16', pool: 'avg', layers: ['conv1_2', 'pool2', 'relu3_3', 'relu4_1'] }, shape: [1, 3, 24, 16] },
  { id: 'style', options: { inChannels: 3, arch: 'vgg11', styleWeight: 0.5 }, shape: [2, 3, 16, 16] },
  { id: 'nhwc', options: { inChannels: 3, arch: 'vgg13', layout: 'nhwc' }, shape: [2, 20, 16, 3] },
  { id: 'segmentation', options: { inChannels: 5, arch: 'vgg11' }, shape: [2, 5, 16, 16], segmentation: { ignoreIndex: 255 } },
];

function inputs(c: Case, seed: number) {
  const count = c.shape.reduce((a, b) => a * b, 1);
  const pred = randn(count, seed);
  const target = randn(count, seed + 1);
  let labels: Int32Array | undefined;
  if (c.segmentation) {
    const [n, , h, w] = c.shape;
    labels = randint(n * h * w, 0, c.options.inChannels, seed + 2);
    for (let i = 0; i < labels.length; i += 7) labels[i] = c.segmentation.ignoreIndex;
  }
  return { pred, target, labels };
}

interface Ours {
  loss: number | Float32Array;
  grad: Float32Array;
}

function runOurs(c: Case, dtype: 'float32' | 'bfloat16'): Ours {
  const { pred, target, labels } = inputs(c, 1);
  using loss = new PerceptualLoss({ ...c.options, dtype, device: 'cpu' });
  const p = { data: pred, shape: c.shape };
  if (labels) {
    const [n, , h, w] = c.shape;
    const r = loss.lossAndGradSegmentation(p, { data: labels, shape: [n, h, w] }, { ignoreIndex: c.segmentation!.ignoreIndex });
    return { loss: r.loss, grad: r.grad };
  }
  const r = loss.lossAndGrad(p, { data: target, shape: c.shape });
  return { loss: r.loss, grad: r.grad };
}

function lossError(actual: number | ArrayLike<number>, expected: number | ArrayLike<number> | undefined): number {
  if (typeof actual === 'number') return relErrorScalar(actual, expected as number);
  return relError(actual, expected as ArrayLike<number>);
}

// ------------------------------------------------------------------ where the CPU has it

describe.skipIf(!cpu.bfloat16)('bfloat16 on a CPU with AVX512-BF16 or AMX-BF16', () => {
  const exact = new Map<string, RefResult>();
  const autocast = new Map<string, RefResult>();

  beforeAll(async () => {
    const refCases: RefCase[] = [];
    for (const c of CASES) {
      const { pred, target, labels } = inputs(c, 1);
      const base = { shape: c.shape, pred, target, outputs: ['loss', 'grad'] as const };
      const seg = labels ? { labels, ignoreIndex: c.segmentation!.ignoreIndex } : {};
      refCases.push({ ...base, ...seg, id: `${c.id}.f64`, options: { ...c.options, dtype: 'float64' } as never });
      refCases.push({ ...base, ...seg, id: `${c.id}.autocast`, options: { ...c.options, dtype: 'float32' } as never, autocast: 'bfloat16' });
    }
    const results = await runReference(refCases);
    for (const c of CASES) {
      exact.set(c.id, results.get(`${c.id}.f64`)!);
      autocast.set(c.id, results.get(`${c.id}.autocast`)!);
    }
  }, 600_000);

  it.each(CASES.map((c) => [c.id, c] as const))('%s: the loss stays within 2e-2 of the float32 loss', (_, c) => {
    const ours = runOurs(c, 'bfloat16');
    const f32 = runOurs(c, 'float32');
    expect(lossError(ours.loss, f32.loss)).toBeLessThanOrEqual(LOSS_RTOL);
  });

  it.each(CASES.map((c) => [c.id, c] as const))(
    "%s: loss and gradient are no further from the exact answer than PyTorch's bf16 autocast, plus a margin",
    (_, c) => {
      const ours = runOurs(c, 'bfloat16');
      const ref = exact.get(c.id)!;
      const torch = autocast.get(c.id)!;
      const oursLoss = lossError(ours.loss, ref.loss);
      const torchLoss = lossError(torch.loss as number | Float64Array, ref.loss);
      expect(oursLoss).toBeLessThanOrEqual(GRAD_MARGIN * torchLoss + 1e-3);
      const oursGrad = relError(ours.grad, ref.grad!);
      const torchGrad = relError(torch.grad!, ref.grad!);
      if (process.env.PL_BF16_REPORT) console.log(`${c.id}: loss error ours ${oursLoss.toExponential(2)} torch ${torchLoss.toExponential(2)}; grad error ours ${oursGrad.toExponential(2)} torch ${torchGrad.toExponential(2)}`);
      // Both are far from zero: bf16 keeps 8 bits through every layer.
      expect(torchGrad).toBeGreaterThan(1e-4);
      expect(oursGrad).toBeLessThanOrEqual(GRAD_MARGIN * torchGrad + GRAD_ATOL);
    },
  );

  it('reports bfloat16 as the dtype and keeps host results float32 (or float64 for Float64Array)', () => {
    using loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', dtype: 'bfloat16' });
    expect(loss.options.dtype).toBe('bfloat16');
    const shape = [1, 3, 16, 16];
    const n = 3 * 16 * 16;
    const r = loss.lossAndGrad({ data: randn(n, 3), shape }, { data: randn(n, 4), shape });
    expect(typeof r.loss).toBe('number');
    expect(r.grad).toBeInstanceOf(Float32Array);
    expect(r.grad.length).toBe(n);
    const r64 = loss.lossAndGrad({ data: Float64Array.from(randn(n, 3)), shape }, { data: Float64Array.from(randn(n, 4)), shape });
    expect(r64.grad).toBeInstanceOf(Float64Array);
    expect(r64.loss).toBe(r.loss);
    const features = loss.features({ data: randn(n, 3), shape });
    expect(features.map((f) => f.data.constructor)).toEqual(features.map(() => Float32Array));
  });

  it('gives the same results sync and async, from host arrays, Tensors and a prepared target', async () => {
    using loss = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', dtype: 'bfloat16', layout: 'nhwc' });
    const shape = [2, 16, 16, 3];
    const n = 2 * 16 * 16 * 3;
    const pred = { data: randn(n, 5), shape };
    const target = { data: randn(n, 6), shape };
    const sync = loss.lossAndGrad(pred, target);
    const async = await loss.lossAndGradAsync(pred, target);
    expect(async.loss).toBe(sync.loss);
    expect(async.grad).toEqual(sync.grad);
    expect(loss.loss(pred, target)).toBe(sync.loss);
    expect(await loss.lossAsync(pred, target)).toBe(sync.loss);
    using prepared = loss.prepareTarget(target);
    const viaPrepared = loss.lossAndGrad(pred, prepared);
    expect(viaPrepared.loss).toBe(sync.loss);
    expect(viaPrepared.grad).toEqual(sync.grad);
    using p = Tensor.from(pred.data, shape);
    using t = Tensor.from(target.data, shape);
    const resident = loss.lossAndGrad(p, t);
    expect(resident.loss).toBe(sync.loss);
    const g = resident.grad;
    expect(g.dtype).toBe('float32');
    expect(g.toArray()).toEqual(sync.grad);
    g.dispose();
    const features = loss.features(pred);
    const featuresAsync = await loss.featuresAsync(pred);
    expect(featuresAsync.map((f) => f.data)).toEqual(features.map((f) => f.data));
    expect(features[0].shape).toEqual([2, 16, 16, 64]); // nhwc, like the input
  });

  it('runs segmentation sync and async alike, with the gradient with respect to float32 logits', async () => {
    using loss = new PerceptualLoss({ inChannels: 4, arch: 'vgg11', dtype: 'bfloat16' });
    const logits = { data: randn(2 * 4 * 16 * 16, 7), shape: [2, 4, 16, 16] };
    const labels = { data: randint(2 * 16 * 16, 0, 4, 8), shape: [2, 16, 16] };
    labels.data[0] = 255;
    const sync = loss.lossAndGradSegmentation(logits, labels);
    const async = await loss.lossAndGradSegmentationAsync(logits, labels);
    expect(sync.grad).toBeInstanceOf(Float32Array);
    expect(async.loss).toBe(sync.loss);
    expect(async.grad).toEqual(sync.grad);
    // An ignored pixel gets no gradient in any channel.
    const g = sync.grad;
    expect([0, 1, 2, 3].map((ch) => Math.abs(g[ch * 16 * 16]))).toEqual([0, 0, 0, 0]);
    expect(g.some((v) => v !== 0)).toBe(true);
  });

  it('keeps the weights bit for bit: stateDict is the float32 draw of the float32 loss', () => {
    using bf = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', dtype: 'bfloat16', seed: 5 });
    using f32 = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', seed: 5 });
    const bytes = (sd: Record<string, { data: Float32Array }>) =>
      Object.entries(sd).map(([name, t]) => [name, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)] as const);
    const a = bytes(bf.stateDict());
    const b = bytes(f32.stateDict());
    expect(a.map(([name]) => name)).toEqual(b.map(([name]) => name));
    expect(a.every(([, buf], i) => buf.equals(b[i][1]))).toBe(true);
  });
});

// ------------------------------------------------------------------ where it does not

// Volumes in bfloat16: the 3-D pools run where libtorch has no bfloat16 CPU kernel for them (1.13's
// max and average pools, 2.x's average pool) in float32, rounding back once. Compared with the
// package's own float32 result: PyTorch 1.13's autocast itself fails on a bfloat16 3-D pool.
describe.skipIf(!cpu.bfloat16)('bfloat16 volumes on a CPU with AVX512-BF16 or AMX-BF16', () => {
  /** The bound of test/fuzz/bfloat16.test.ts on a gradient's relative L2 error. */
  const GRAD_RTOL = 0.25;
  const VOLUME_CASES: Array<{ id: string; options: PerceptualLossOptions; shape: number[] }> = [
    { id: 'default arch, max pools', options: { inChannels: 1, spatialDims: 3 }, shape: [1, 1, 16, 16, 16] },
    { id: 'custom arch, avg pools, style', options: { inChannels: 2, spatialDims: 3, arch: [8, 'M', 16, 'M', 16], pool: 'avg', styleWeight: 0.5 }, shape: [2, 2, 8, 8, 12] },
    { id: "'ndhwc', max pools", options: { inChannels: 2, spatialDims: 3, arch: [8, 'M', 16, 'M', 16], layout: 'ndhwc' }, shape: [1, 8, 12, 8, 2] },
    // Depth 1 with one or three channels: where libtorch 2.x's oneDNN gives zeros (2.13).
    { id: 'depth 1, one channel', options: { inChannels: 1, spatialDims: 3, arch: [4, 1, 3] }, shape: [2, 1, 1, 5, 6] },
    { id: 'depth 1, three channels', options: { inChannels: 3, spatialDims: 3, arch: [3, 2], layout: 'ndhwc' }, shape: [1, 1, 4, 4, 3] },
  ];
  it.each(VOLUME_CASES.map((c) => [c.id, c] as const))('%s: loss within 2e-2 and gradient within 0.25 of float32', (_, c) => {
    const count = c.shape.reduce((a, b) => a * b, 1);
    const pred = { data: randn(count, 71), shape: c.shape };
    const target = { data: randn(count, 72), shape: c.shape };
    using bf16 = new PerceptualLoss({ ...c.options, dtype: 'bfloat16', device: 'cpu' });
    using f32 = new PerceptualLoss({ ...c.options, device: 'cpu' });
    const ours = bf16.lossAndGrad(pred, target);
    const exact = f32.lossAndGrad(pred, target);
    expect(ours.grad).toBeInstanceOf(Float32Array);
    expect(lossError(ours.loss, exact.loss)).toBeLessThanOrEqual(LOSS_RTOL);
    expect(relError(ours.grad, exact.grad)).toBeLessThanOrEqual(GRAD_RTOL);
  });
});

describe('bfloat16 where the CPU lacks it', () => {
  it('names the missing CPU feature in ERR_DTYPE', () => {
    const missing = 'AVX512-BF16 or AMX-BF16; this CPU has AVX-512 but neither';
    let thrown: unknown;
    try {
      resolveOptions({ inChannels: 3, dtype: 'bfloat16', device: 'cpu' }, 0, missing);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(PerceptualLossError);
    expect((thrown as PerceptualLossError).code).toBe('ERR_DTYPE');
    expect((thrown as Error).message).toContain(`"bfloat16" on the CPU needs ${missing}`);
  });

  it('is allowed by the same rule when nothing is missing', () => {
    expect(resolveOptions({ inChannels: 3, dtype: 'bfloat16', device: 'cpu' }, 0, '').options.dtype).toBe('bfloat16');
  });

  it.skipIf(cpu.bfloat16)('on this CPU (one without AVX512-BF16 or AMX-BF16): new PerceptualLoss refuses it with what is missing', () => {
    let thrown: unknown;
    try {
      new PerceptualLoss({ inChannels: 3, dtype: 'bfloat16', device: 'cpu' });
    } catch (e) {
      thrown = e;
    }
    expect((thrown as PerceptualLossError).code).toBe('ERR_DTYPE');
    expect((thrown as Error).message).toContain(cpu.bfloat16Missing);
  });

  it('runtime().cpu says what cpuid found, consistently', () => {
    expect(cpu.bfloat16).toBe(cpu.bfloat16Missing === '');
    if (cpu.bfloat16) expect(cpu.avx512 && (cpu.avx512Bf16 || cpu.amxBf16)).toBe(true);
    if (cpu.avx512Bf16) expect(cpu.avx512).toBe(true);
  });

  it('still refuses float16 on the CPU, pointing at bfloat16', () => {
    let thrown: unknown;
    try {
      new PerceptualLoss({ inChannels: 3, dtype: 'float16', device: 'cpu' });
    } catch (e) {
      thrown = e;
    }
    expect((thrown as PerceptualLossError).code).toBe('ERR_DTYPE');
    expect((thrown as Error).message).toMatch(/"float16" is for CUDA devices.*'bfloat16'/);
  });
});
