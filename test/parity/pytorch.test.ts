// Parity with PyTorch (reference/cases.py): weights bit for bit, and features, loss and
// gradient within 1e-5 (float32) or 1e-10 (float64) relative error, over the option space.
// A float32 result that misses 1e-5 against PyTorch's default CPU route must meet it against
// PyTorch's oneDNN route (RouteMatch below), or else pass under the rule of FALLBACK_CAP; every
// such result is printed, and the fallbacks are checked against a known list.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, runtime, type PerceptualLossOptions } from '../../lib/index';
import { writeSafetensors } from '../../lib/safetensors';
import { randint, randn } from '../helpers/random';
import { relError, runReference, sha256OfFloat32, type RefCase, type RefResult } from '../helpers/reference';

interface Case {
  id: string;
  options: PerceptualLossOptions;
  /** In the layout of the options. */
  shape: [number, number, number, number];
  /** A segmentation case: classes = inChannels, `ignored` pixels carry ignoreIndex. */
  segmentation?: { ignoreIndex: number; ignored: number };
}

const CASES: Case[] = [
  // Architectures with their default taps.
  { id: 'vgg19-default', options: { inChannels: 3 }, shape: [2, 3, 32, 32] },
  { id: 'vgg11-l1', options: { inChannels: 3, arch: 'vgg11', criterion: 'l1' }, shape: [2, 3, 24, 24] },
  { id: 'vgg13-smoothl1-sum', options: { inChannels: 3, arch: 'vgg13', criterion: 'smooth_l1', reduction: 'sum' }, shape: [1, 3, 17, 21] },
  { id: 'vgg16-none', options: { inChannels: 3, arch: 'vgg16', reduction: 'none' }, shape: [3, 3, 16, 19] },
  { id: 'vgg19-1ch-odd', options: { inChannels: 1, seed: 7 }, shape: [2, 1, 33, 17] },
  { id: 'vgg19-19ch', options: { inChannels: 19, layers: ['relu1_2', 'relu2_2', 'relu3_4'] }, shape: [2, 19, 20, 20] },
  // Initializations.
  { id: 'init-kaiming-uniform', options: { inChannels: 3, arch: 'vgg11', init: 'kaiming_uniform', seed: 3 }, shape: [1, 3, 16, 16] },
  { id: 'init-xavier-normal', options: { inChannels: 3, arch: 'vgg13', init: 'xavier_normal', seed: 11 }, shape: [1, 3, 16, 16] },
  { id: 'init-xavier-uniform', options: { inChannels: 2, arch: 'vgg16', init: 'xavier_uniform', seed: 123456789 }, shape: [1, 2, 18, 16] },
  { id: 'init-normal', options: { inChannels: 3, init: { normal: 0.05 }, seed: 42 }, shape: [1, 3, 16, 16] },
  // Taps: conv (pre-activation), pool, custom weights.
  {
    id: 'taps-conv-pool',
    options: { inChannels: 3, arch: 'vgg16', layers: ['conv1_1', 'pool1', 'conv2_2', 'relu3_1', 'pool3'], layerWeights: [0.5, 1, 2, 0.25, 3] },
    shape: [2, 3, 24, 16],
  },
  {
    id: 'taps-weights-by-name',
    options: { inChannels: 3, layers: ['relu2_1', 'relu1_1', 'conv4_4'], layerWeights: { relu1_1: 0.1, conv4_4: 4 } },
    shape: [1, 3, 16, 24],
  },
  // Custom architectures.
  { id: 'custom-small', options: { inChannels: 4, arch: [16, 'M', 32, 32, 'M', 48] }, shape: [2, 4, 13, 9] },
  {
    id: 'custom-avg-taps',
    options: { inChannels: 2, arch: [8, 8, 'M', 16, 'M', 24], pool: 'avg', layers: ['conv1_2', 'pool2', 'relu3_1'], criterion: 'l1' },
    shape: [2, 2, 12, 15],
  },
  { id: 'avg-pool-vgg11', options: { inChannels: 3, arch: 'vgg11', pool: 'avg' }, shape: [1, 3, 16, 20] },
  // Style (Gram) term, with each criterion and reduction.
  { id: 'style-l2-mean', options: { inChannels: 3, arch: 'vgg11', styleWeight: 0.5 }, shape: [2, 3, 16, 16] },
  { id: 'style-l1-sum', options: { inChannels: 3, arch: 'vgg11', styleWeight: 2, criterion: 'l1', reduction: 'sum' }, shape: [1, 3, 16, 16] },
  { id: 'style-smoothl1-none', options: { inChannels: 3, arch: 'vgg13', styleWeight: 10, criterion: 'smooth_l1', reduction: 'none' }, shape: [2, 3, 16, 16] },
  { id: 'style-only', options: { inChannels: 1, arch: [8, 'M', 16], featureWeight: 0, styleWeight: 1 }, shape: [2, 1, 10, 10] },
  // Layouts.
  { id: 'nhwc-vgg19', options: { inChannels: 3, layout: 'nhwc' }, shape: [2, 20, 16, 3] },
  { id: 'nhwc-style-none', options: { inChannels: 5, arch: 'vgg11', layout: 'nhwc', styleWeight: 1, reduction: 'none' }, shape: [2, 16, 17, 5] },
  { id: 'nhwc-l1-1ch', options: { inChannels: 1, arch: 'vgg13', layout: 'nhwc', criterion: 'l1' }, shape: [1, 19, 16, 1] },
  // float64 compute.
  { id: 'f64-vgg19', options: { inChannels: 3, dtype: 'float64' }, shape: [1, 3, 16, 16] },
  { id: 'f64-l1-none', options: { inChannels: 3, arch: 'vgg11', dtype: 'float64', criterion: 'l1', reduction: 'none' }, shape: [2, 3, 16, 16] },
  { id: 'f64-smoothl1-style', options: { inChannels: 2, arch: 'vgg13', dtype: 'float64', criterion: 'smooth_l1', styleWeight: 3 }, shape: [1, 2, 17, 16] },
  { id: 'f64-nhwc-avg', options: { inChannels: 3, arch: 'vgg16', dtype: 'float64', layout: 'nhwc', pool: 'avg', reduction: 'sum' }, shape: [1, 16, 18, 3] },
  { id: 'f64-xavier-19ch', options: { inChannels: 19, arch: [32, 'M', 32], dtype: 'float64', init: 'xavier_uniform' }, shape: [2, 19, 9, 11] },
  // Segmentation: softmax against one-hot, with ignored pixels.
  { id: 'seg-19-ignore', options: { inChannels: 19, arch: 'vgg11' }, shape: [2, 19, 16, 16], segmentation: { ignoreIndex: 255, ignored: 40 } },
  { id: 'seg-5-nhwc', options: { inChannels: 5, layout: 'nhwc', layers: ['relu1_2', 'relu2_2', 'relu3_4'] }, shape: [2, 16, 12, 5], segmentation: { ignoreIndex: 255, ignored: 10 } },
  { id: 'seg-f64-style', options: { inChannels: 3, arch: [8, 'M', 16], dtype: 'float64', styleWeight: 1 }, shape: [1, 3, 10, 12], segmentation: { ignoreIndex: -1, ignored: 7 } },
  { id: 'seg-l1-none', options: { inChannels: 4, arch: 'vgg13', criterion: 'l1', reduction: 'none' }, shape: [2, 4, 16, 16], segmentation: { ignoreIndex: 255, ignored: 0 } },
];

function count(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function inputsOf(c: Case, index: number) {
  const n = count(c.shape);
  const pred = randn(n, 1000 + index);
  const target = randn(n, 2000 + index);
  let labels: Int32Array | undefined;
  if (c.segmentation) {
    const nhwc = c.options.layout === 'nhwc';
    const [batch, h, w] = nhwc ? c.shape.slice(0, 3) : [c.shape[0], c.shape[2], c.shape[3]];
    labels = randint(batch * h * w, 0, c.options.inChannels, 3000 + index);
    const spots = randint(c.segmentation.ignored, 0, labels.length, 4000 + index);
    for (const s of spots) labels[s] = c.segmentation.ignoreIndex;
  }
  return { pred, target, labels };
}

const toF64 = (a: Float32Array) => Float64Array.from(a);

/**
 * The float32 fallback. A float32 result may miss 1e-5 against PyTorch's float32 answer only if it
 * is at least as close to PyTorch's float64 answer (the exact one, up to 1e-16) as PyTorch's own
 * float32 is, and never by more than FALLBACK_CAP. Two float32 implementations that sum in different
 * orders (oneDNN here, im2col + BLAS in PyTorch at batch 1) each carry a rounding error of about
 * sqrt(K) * 6e-8 per conv, K = 9 * Cin up to 4,608, through up to 16 convs: a few 1e-6 for a
 * well-conditioned case, and more where the loss is a small difference of large features. Their
 * distance to each other is at most the sum of both distances to the exact answer. 1e-4 is ten
 * times the strict tolerance and ten times the worst case seen (init-normal's gradient: 1.03e-5
 * from PyTorch's float32, 3.2e-6 from the exact answer against PyTorch's own 9.6e-6), and far below
 * a real defect (a wrong weight, tap, reduction or layout gives errors of order 1).
 */
const FALLBACK_CAP = 1e-4;

/**
 * The comparisons that need the fallback where this list was measured: the CPU with Debian's
 * libtorch 1.13 (both sides run the same oneDNN there, except that PyTorch sends batch-1 convs to
 * im2col + the reference BLAS). There a comparison outside the list fails: a result moved away
 * from PyTorch's. Other libtorch builds and CUDA round differently, so there the list is only
 * printed, and at most MAX_FALLBACKS comparisons may use the rule.
 */
const KNOWN_FALLBACKS = new Set<string>(['init-normal grad']);
const MAX_FALLBACKS = 3;

/**
 * PyTorch has two CPU conv routes in float32, and picks one by batch size: im2col + BLAS for a
 * batch of 1, oneDNN from 16 on. This package takes oneDNN at every batch size. The two round
 * differently, and which is nearer the exact answer depends on the machine's BLAS: on an AVX2-only AMD EPYC with PyTorch 2.13, the init-normal gradient came out
 * 6.7e-6 from float64 by BLAS and 8.4e-6 by oneDNN (this package's value, to the bit). So a
 * float32 result that misses the tolerance against PyTorch's default route is compared with
 * PyTorch's oneDNN route for the same inputs (the reference's `route: 'onednn'`), at the same
 * tolerance.
 */
interface RouteMatch {
  what: string;
  /** Against PyTorch float32 on its default route and on its oneDNN route. */
  error: number;
  oneDnnError: number;
  /** This package's and PyTorch's default-route float32 results against PyTorch's float64 one. */
  ownExact: number;
  torchExact: number;
}

interface Fallback {
  what: string;
  /** Against PyTorch's float32 result. */
  error: number;
  /** This package's and PyTorch's float32 results against PyTorch's float64 one. */
  ownExact: number;
  torchExact: number;
}

describe('parity with PyTorch', () => {
  let reference: Map<string, RefResult>;
  const fallbacks: Fallback[] = [];
  const routeMatches: RouteMatch[] = [];
  // Each case as given to the reference, and its oneDNN-route result, fetched once when needed.
  const refCases = new Map<string, RefCase>();
  const oneDnnResults = new Map<string, Promise<RefResult>>();
  const oneDnnOf = (id: string): Promise<RefResult> => {
    let result = oneDnnResults.get(id);
    if (!result) {
      const own = refCases.get(id)!;
      const onednn: RefCase = { ...own, id: `${id}.onednn`, route: 'onednn', outputs: ['features', 'loss', 'grad'] };
      result = runReference([onednn]).then((results) => results.get(onednn.id)!);
      oneDnnResults.set(id, result);
    }
    return result;
  };

  beforeAll(async () => {
    const cases: RefCase[] = CASES.flatMap((c, i) => {
      const { pred, target, labels } = inputsOf(c, i);
      // The user's options as they are: the reference fills in the defaults (taps, weights) itself.
      const options = c.options as RefCase['options'];
      const base = { options, shape: c.shape, pred, target, labels, ignoreIndex: c.segmentation?.ignoreIndex };
      const own: RefCase = { ...base, id: c.id, outputs: ['weights', 'features', 'loss', 'grad'] };
      refCases.set(c.id, own);
      // Each float32 case also in float64: the exact answer that both float32 results approximate.
      const exact: RefCase = { ...base, id: `${c.id}.exact`, options: { ...options, dtype: 'float64' }, outputs: ['features', 'loss', 'grad'] };
      return c.options.dtype === 'float64' ? [own] : [own, exact];
    });
    reference = await runReference(cases);
  });

  // Where KNOWN_FALLBACKS was measured (see there).
  let measuredHere = false;
  beforeAll(() => {
    const info = runtime();
    measuredHere = info.libtorch.version.startsWith('1.13.') && info.devices.length === 1;
  });

  afterAll(() => {
    const lines = fallbacks.map(
      (f) => `  ${f.what}: ${f.error.toExponential(2)} from PyTorch float32; to float64: ${f.ownExact.toExponential(2)} (PyTorch float32: ${f.torchExact.toExponential(2)})`,
    );
    const routeLines = routeMatches.map(
      (m) =>
        `  ${m.what}: ${m.error.toExponential(2)} from PyTorch float32, ${m.oneDnnError.toExponential(2)} on its oneDNN route; ` +
        `to float64: ${m.ownExact.toExponential(2)} (PyTorch float32: ${m.torchExact.toExponential(2)})`,
    );
    console.log(`parity: ${routeMatches.length} comparison(s) met the tolerance on PyTorch's oneDNN route only${routeLines.length ? `:\n${routeLines.join('\n')}` : ''}`);
    console.log(`parity: ${fallbacks.length} comparison(s) passed by the float32 fallback (cap ${FALLBACK_CAP})${lines.length ? `:\n${lines.join('\n')}` : ''}`);
  });

  it('covers at least 30 configurations', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(30);
  });

  CASES.forEach((c, index) => {
    const f64 = c.options.dtype === 'float64';
    const tolerance = f64 ? 1e-10 : 1e-5;

    /**
     * Within `tolerance` of PyTorch; in float32, against PyTorch's default route or its oneDNN route
     * (RouteMatch), or else under the fallback rule (FALLBACK_CAP): below the cap, and at least as
     * close to PyTorch's float64 answer as PyTorch's float32 is.
     */
    const expectClose = async (
      what: string,
      actual: ArrayLike<number>,
      torch: ArrayLike<number>,
      exact: () => ArrayLike<number>,
      oneDnn: (r: RefResult) => ArrayLike<number>,
    ) => {
      const error = relError(actual, torch);
      if (f64 || error < tolerance) {
        expect(error, what).toBeLessThan(tolerance);
        return;
      }
      const oneDnnError = relError(actual, oneDnn(await oneDnnOf(c.id)));
      const fallback = { what: `${c.id} ${what}`, error, ownExact: relError(actual, exact()), torchExact: relError(torch, exact()) };
      if (oneDnnError < tolerance) {
        routeMatches.push({ ...fallback, oneDnnError });
        expect(error, `${fallback.what} against PyTorch float32 (fallback cap)`).toBeLessThan(FALLBACK_CAP);
        return;
      }
      fallbacks.push(fallback);
      expect(error, `${fallback.what} against PyTorch float32 (fallback cap)`).toBeLessThan(FALLBACK_CAP);
      expect(fallback.ownExact, `${fallback.what}: no closer to PyTorch float64 than PyTorch float32 is`).toBeLessThanOrEqual(fallback.torchExact);
      if (measuredHere) expect([...KNOWN_FALLBACKS], `${fallback.what} needs the fallback but is not a known case`).toContain(fallback.what);
    };
    const exactOf = () => reference.get(`${c.id}.exact`)!;

    describe(c.id, () => {
      const loss = () => new PerceptualLoss(c.options);
      // float64 cases feed exactly the same values as Float64Array, and get Float64Array back.
      const host = (data: Float32Array) => ({ data: f64 ? toF64(data) : data, shape: c.shape });

      it('draws bit-identical weights', () => {
        const ref = reference.get(c.id)!;
        const state = loss().stateDict();
        expect(Object.keys(state)).toEqual(ref.stateDictNames);
        expect(sha256OfFloat32(Object.values(state).map((t) => t.data))).toBe(ref.weightsSha256);
      });

      // (For segmentation the reference reports the features of the masked softmax, not of pred.)
      if (!c.segmentation) it(`matches the features of pred within ${tolerance}`, async () => {
        const ref = reference.get(c.id)!;
        const { pred } = inputsOf(c, index);
        const features = loss().features(host(pred));
        expect(features.map((f) => f.name)).toEqual(ref.features!.map((f) => f.name));
        for (const [i, f] of features.entries()) {
          expect(f.shape).toEqual(ref.features![i].shape);
          await expectClose(`features ${f.name}`, f.data, ref.features![i].data, () => exactOf().features![i].data, (r) => r.features![i].data);
        }
      });

      it(`matches the loss and its gradient within ${tolerance}`, async () => {
        const ref = reference.get(c.id)!;
        const { pred, target, labels } = inputsOf(c, index);
        const result = c.segmentation
          ? loss().lossAndGradSegmentation(host(pred), { data: labels!, shape: labelShape(c) }, {
              ignoreIndex: c.segmentation.ignoreIndex,
            })
          : loss().lossAndGrad(host(pred), host(target));
        if (typeof ref.loss === 'number') {
          expect(typeof result.loss).toBe('number');
          await expectClose('loss', [result.loss as number], [ref.loss], () => [exactOf().loss as number], (r) => [r.loss as number]);
        } else {
          expect(result.loss).toBeInstanceOf(f64 ? Float64Array : Float32Array);
          await expectClose('loss', result.loss as Float32Array, ref.loss!, () => exactOf().loss as Float64Array, (r) => r.loss as Float64Array);
        }
        expect(result.grad).toBeInstanceOf(f64 ? Float64Array : Float32Array);
        await expectClose('grad', result.grad, ref.grad!, () => exactOf().grad!, (r) => r.grad!);
      });
    });
  });

  it(`uses the float32 fallback for at most ${MAX_FALLBACKS} comparisons`, () => {
    // Declared last, so it runs after every case above.
    expect(fallbacks.length, fallbacks.map((f) => f.what).join(', ')).toBeLessThanOrEqual(MAX_FALLBACKS);
  });
});

function labelShape(c: Case): number[] {
  return c.options.layout === 'nhwc' ? c.shape.slice(0, 3) : [c.shape[0], c.shape[2], c.shape[3]];
}

// The CPU float32 and bfloat16 convs run on oneDNN. On libtorch 2.x their weights are reordered
// once into oneDNN's layout and the ReLU after each untapped conv runs inside it; that ReLU maps
// NaN to 0, so only inputs checked finite (checkFinite: true) take it. On 1.13 the wide convs
// (the 512-channel blocks) keep prepacked weights and run on oneDNN's blocked activations. The
// parity cases above run these paths (the default options) on whichever libtorch the suite is given.
describe('the oneDNN conv path on the CPU', () => {
  it('prepacks every weight and fuses the ReLU on libtorch 2.x, and only the wide convs on 1.13', () => {
    const info = runtime();
    expect(info.cpu.prepackedWeights).toBe(Number(info.libtorch.version.split('.')[0]) >= 2 ? 'all' : 'wide');
  });

  const dtypes = ['float32', ...(runtime().cpu.bfloat16 ? ['bfloat16' as const] : [])] as const;
  for (const dtype of dtypes) {
    it(`gives the same ${dtype} features, loss and gradient with the ReLUs fused (checkFinite: true) or apart (false)`, () => {
      const shape = [2, 3, 20, 24];
      const pred = { data: randn(count(shape), 51), shape };
      const target = { data: randn(count(shape), 52), shape };
      // A conv tap keeps its pre-activation values; the ReLU taps follow fused convs.
      const options: PerceptualLossOptions = { inChannels: 3, dtype, layers: ['conv1_1', 'relu1_2', 'relu2_2', 'relu3_4', 'relu4_1'] };
      const fused = new PerceptualLoss({ ...options, checkFinite: true });
      const apart = new PerceptualLoss({ ...options, checkFinite: false });
      const a = fused.lossAndGrad(pred, target);
      const b = apart.lossAndGrad(pred, target);
      expect(a.loss).toBe(b.loss);
      expect(a.grad).toEqual(b.grad);
      const fa = fused.features(pred);
      const fb = apart.features(pred);
      fa.forEach((f, i) => expect(f.data, f.name).toEqual(fb[i].data));
    });
  }

  it('applies loaded non-zero biases in every conv, the prepacked ones included, as ATen float64 does', () => {
    // Biases of the size of the activations: a conv that dropped its bias would be far off.
    const state = Object.entries(new PerceptualLoss({ inChannels: 3 }).stateDict()).map(([name, a], i) => ({
      name,
      shape: a.shape,
      data: name.endsWith('.bias') ? randn(a.data.length, 600 + i).map((v) => 0.1 * v) : a.data,
    }));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-bias-'));
    try {
      const file = path.join(dir, 'biased.safetensors');
      writeSafetensors(file, state, { format: 'pt' });
      const shape = [2, 3, 32, 32];
      const pred = randn(count(shape), 61);
      const target = randn(count(shape), 62);
      const oneDnn = PerceptualLoss.load(file, { inChannels: 3 });
      const aten = PerceptualLoss.load(file, { inChannels: 3, dtype: 'float64' });
      const ours = oneDnn.features({ data: pred, shape });
      const exact = aten.features({ data: toF64(pred), shape });
      expect(ours.map((f) => f.name)).toContain('relu5_4');
      ours.forEach((f, i) => expect(relError(f.data, exact[i].data), f.name).toBeLessThan(1e-4));
      const a = oneDnn.lossAndGrad({ data: pred, shape }, { data: target, shape });
      const b = aten.lossAndGrad({ data: toF64(pred), shape }, { data: toF64(target), shape });
      expect(relError([a.loss as number], [b.loss as number])).toBeLessThan(1e-4);
      expect(relError(a.grad, b.grad)).toBeLessThan(1e-4);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
