// An independent float64 implementation of the loss of docs/api.md in plain JavaScript: the network
// (3x3 convs, ReLU, 2x2 pools, or for volumes 3x3x3 convs and 2x2x2 pools) forward and backward,
// the criteria, the reductions, the Gram term, segmentation and instance masks (with weights). It is slow but needs no process, so the fuzz tests can check every
// valid case against it. It follows PyTorch's rules for NaN (ReLU and max pool propagate it,
// sign(NaN) = 0, clamp(NaN) = NaN, relu backward passes the gradient where the output is NaN).

export type ArchEntry = number | 'M';

/** The options that change the result, resolved (PerceptualLoss#options has these). */
export interface JsOptions {
  inChannels: number;
  arch: readonly ArchEntry[];
  layers: readonly string[];
  layerWeights: readonly number[];
  criterion: 'l1' | 'l2' | 'smooth_l1';
  featureWeight: number;
  styleWeight: number;
  reduction: 'mean' | 'sum' | 'none';
  pool: 'max' | 'avg';
}

/** Channels first, float64: NCHW [N, C, H, W], or NCDHW [N, C, D, H, W] for volumes. */
export interface JsTensor {
  shape: number[];
  data: Float64Array;
}

/** A conv's parameters, as in the state dict: weight [out, in, 3, 3] ([out, in, 3, 3, 3] in 3-D), bias [out]. */
export interface JsConv {
  weight: ArrayLike<number>;
  bias: ArrayLike<number>;
}

interface Module {
  kind: 'conv' | 'relu' | 'pool';
  name: string;
  conv?: number;
  outChannels?: number;
}

export function modulesOf(arch: readonly ArchEntry[]): Module[] {
  const modules: Module[] = [];
  let block = 1;
  let conv = 0;
  let convs = 0;
  for (const entry of arch) {
    if (entry === 'M') {
      modules.push({ kind: 'pool', name: `pool${block}` });
      block += 1;
      conv = 0;
    } else {
      conv += 1;
      modules.push({ kind: 'conv', name: `conv${block}_${conv}`, conv: convs++, outChannels: entry });
      modules.push({ kind: 'relu', name: `relu${block}_${conv}` });
    }
  }
  return modules;
}

/** Tap names of an arch, in module order. */
export function tapNames(arch: readonly ArchEntry[]): string[] {
  return modulesOf(arch).map((m) => m.name);
}

/** Smallest H and W (and D) that reach the deepest of `layers`: 2 ** (pools up to it). */
export function minSizeOf(arch: readonly ArchEntry[], layers: readonly string[]): number {
  const modules = modulesOf(arch);
  const deepest = Math.max(...layers.map((l) => modules.findIndex((m) => m.name === l)));
  return 2 ** modules.slice(0, deepest + 1).filter((m) => m.kind === 'pool').length;
}

/** The state dict in conv order (names features.{k}.weight / .bias, sorted by k). */
export function convsOf(stateDict: Record<string, { data: ArrayLike<number> }>): JsConv[] {
  const indices = [...new Set(Object.keys(stateDict).map((name) => Number(name.split('.')[1])))].sort((a, b) => a - b);
  return indices.map((k) => ({ weight: stateDict[`features.${k}.weight`].data, bias: stateDict[`features.${k}.bias`].data }));
}

const at = (t: JsTensor, n: number, c: number, y: number, x: number) => {
  const [, C, H, W] = t.shape;
  return ((n * C + c) * H + y) * W + x;
};

const at3 = (t: JsTensor, n: number, c: number, z: number, y: number, x: number) => {
  const [, C, D, H, W] = t.shape;
  return (((n * C + c) * D + z) * H + y) * W + x;
};

function zeros(shape: number[]): JsTensor {
  return { shape, data: new Float64Array(shape.reduce((a, b) => a * b, 1)) };
}

/** The number of values per channel of one sample: H * W, or D * H * W. */
const spatialSize = (shape: readonly number[]) => shape.slice(2).reduce((a, b) => a * b, 1);

function conv2d(x: JsTensor, p: JsConv, out: number): JsTensor {
  const [N, C, H, W] = x.shape;
  const y = zeros([N, out, H, W]);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < out; o++)
      for (let r = 0; r < H; r++)
        for (let s = 0; s < W; s++) {
          let sum = p.bias[o];
          for (let i = 0; i < C; i++)
            for (let ky = 0; ky < 3; ky++) {
              const rr = r + ky - 1;
              if (rr < 0 || rr >= H) continue;
              for (let kx = 0; kx < 3; kx++) {
                const ss = s + kx - 1;
                if (ss < 0 || ss >= W) continue;
                sum += p.weight[((o * C + i) * 3 + ky) * 3 + kx] * x.data[at(x, n, i, rr, ss)];
              }
            }
          y.data[at(y, n, o, r, s)] = sum;
        }
  return y;
}

function conv2dBackInput(g: JsTensor, p: JsConv, inChannels: number): JsTensor {
  const [N, O, H, W] = g.shape;
  const dx = zeros([N, inChannels, H, W]);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let r = 0; r < H; r++)
        for (let s = 0; s < W; s++) {
          const go = g.data[at(g, n, o, r, s)];
          if (go === 0) continue;
          for (let i = 0; i < inChannels; i++)
            for (let ky = 0; ky < 3; ky++) {
              const rr = r + ky - 1;
              if (rr < 0 || rr >= H) continue;
              for (let kx = 0; kx < 3; kx++) {
                const ss = s + kx - 1;
                if (ss < 0 || ss >= W) continue;
                dx.data[at(dx, n, i, rr, ss)] += go * p.weight[((o * inChannels + i) * 3 + ky) * 3 + kx];
              }
            }
        }
  return dx;
}

// clamp_min(v, 0): NaN stays NaN.
const relu = (v: number) => (v > 0 ? v : Number.isNaN(v) ? NaN : 0);

function pool(x: JsTensor, kind: 'max' | 'avg'): { out: JsTensor; index?: Int32Array } {
  const [N, C, H, W] = x.shape;
  const oh = Math.floor(H / 2);
  const ow = Math.floor(W / 2);
  const out = zeros([N, C, oh, ow]);
  const index = kind === 'max' ? new Int32Array(out.data.length) : undefined;
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let r = 0; r < oh; r++)
        for (let s = 0; s < ow; s++) {
          const o = at(out, n, c, r, s);
          if (kind === 'avg') {
            let sum = 0;
            for (let dy = 0; dy < 2; dy++) for (let dx = 0; dx < 2; dx++) sum += x.data[at(x, n, c, 2 * r + dy, 2 * s + dx)];
            out.data[o] = sum / 4;
          } else {
            // PyTorch's CPU kernel: the first maximum, or the last NaN.
            let best = -Infinity;
            let bestAt = at(x, n, c, 2 * r, 2 * s);
            for (let dy = 0; dy < 2; dy++)
              for (let dx = 0; dx < 2; dx++) {
                const i = at(x, n, c, 2 * r + dy, 2 * s + dx);
                const v = x.data[i];
                if (v > best || Number.isNaN(v)) {
                  best = v;
                  bestAt = i;
                }
              }
            out.data[o] = best;
            index![o] = bestAt;
          }
        }
  return { out, index };
}

function poolBack(g: JsTensor, input: JsTensor, kind: 'max' | 'avg', index?: Int32Array): JsTensor {
  const dx = zeros(input.shape);
  const [N, C, oh, ow] = g.shape;
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let r = 0; r < oh; r++)
        for (let s = 0; s < ow; s++) {
          const o = at(g, n, c, r, s);
          if (kind === 'max') dx.data[index![o]] += g.data[o];
          else for (let dy = 0; dy < 2; dy++) for (let ddx = 0; ddx < 2; ddx++) dx.data[at(dx, n, c, 2 * r + dy, 2 * s + ddx)] += g.data[o] / 4;
        }
  return dx;
}

function conv3d(x: JsTensor, p: JsConv, out: number): JsTensor {
  const [N, C, D, H, W] = x.shape;
  const y = zeros([N, out, D, H, W]);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < out; o++)
      for (let q = 0; q < D; q++)
        for (let r = 0; r < H; r++)
          for (let s = 0; s < W; s++) {
            let sum = p.bias[o];
            for (let i = 0; i < C; i++)
              for (let kz = 0; kz < 3; kz++) {
                const qq = q + kz - 1;
                if (qq < 0 || qq >= D) continue;
                for (let ky = 0; ky < 3; ky++) {
                  const rr = r + ky - 1;
                  if (rr < 0 || rr >= H) continue;
                  for (let kx = 0; kx < 3; kx++) {
                    const ss = s + kx - 1;
                    if (ss < 0 || ss >= W) continue;
                    sum += p.weight[(((o * C + i) * 3 + kz) * 3 + ky) * 3 + kx] * x.data[at3(x, n, i, qq, rr, ss)];
                  }
                }
              }
            y.data[at3(y, n, o, q, r, s)] = sum;
          }
  return y;
}

function conv3dBackInput(g: JsTensor, p: JsConv, inChannels: number): JsTensor {
  const [N, O, D, H, W] = g.shape;
  const dx = zeros([N, inChannels, D, H, W]);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let q = 0; q < D; q++)
        for (let r = 0; r < H; r++)
          for (let s = 0; s < W; s++) {
            const go = g.data[at3(g, n, o, q, r, s)];
            if (go === 0) continue;
            for (let i = 0; i < inChannels; i++)
              for (let kz = 0; kz < 3; kz++) {
                const qq = q + kz - 1;
                if (qq < 0 || qq >= D) continue;
                for (let ky = 0; ky < 3; ky++) {
                  const rr = r + ky - 1;
                  if (rr < 0 || rr >= H) continue;
                  for (let kx = 0; kx < 3; kx++) {
                    const ss = s + kx - 1;
                    if (ss < 0 || ss >= W) continue;
                    dx.data[at3(dx, n, i, qq, rr, ss)] += go * p.weight[(((o * inChannels + i) * 3 + kz) * 3 + ky) * 3 + kx];
                  }
                }
              }
          }
  return dx;
}

/** The 2x2x2 pool, stride 2: the first maximum in (z, y, x) order, or the last NaN, as PyTorch's CPU kernel. */
function pool3d(x: JsTensor, kind: 'max' | 'avg'): { out: JsTensor; index?: Int32Array } {
  const [N, C, D, H, W] = x.shape;
  const [od, oh, ow] = [Math.floor(D / 2), Math.floor(H / 2), Math.floor(W / 2)];
  const out = zeros([N, C, od, oh, ow]);
  const index = kind === 'max' ? new Int32Array(out.data.length) : undefined;
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let q = 0; q < od; q++)
        for (let r = 0; r < oh; r++)
          for (let s = 0; s < ow; s++) {
            const o = at3(out, n, c, q, r, s);
            let best = -Infinity;
            let bestAt = at3(x, n, c, 2 * q, 2 * r, 2 * s);
            let sum = 0;
            for (let dz = 0; dz < 2; dz++)
              for (let dy = 0; dy < 2; dy++)
                for (let dx = 0; dx < 2; dx++) {
                  const i = at3(x, n, c, 2 * q + dz, 2 * r + dy, 2 * s + dx);
                  const v = x.data[i];
                  sum += v;
                  if (v > best || Number.isNaN(v)) {
                    best = v;
                    bestAt = i;
                  }
                }
            if (kind === 'avg') out.data[o] = sum / 8;
            else {
              out.data[o] = best;
              index![o] = bestAt;
            }
          }
  return { out, index };
}

function pool3dBack(g: JsTensor, input: JsTensor, kind: 'max' | 'avg', index?: Int32Array): JsTensor {
  const dx = zeros(input.shape);
  const [N, C, od, oh, ow] = g.shape;
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let q = 0; q < od; q++)
        for (let r = 0; r < oh; r++)
          for (let s = 0; s < ow; s++) {
            const o = at3(g, n, c, q, r, s);
            if (kind === 'max') dx.data[index![o]] += g.data[o];
            else
              for (let dz = 0; dz < 2; dz++)
                for (let dy = 0; dy < 2; dy++) for (let ddx = 0; ddx < 2; ddx++) dx.data[at3(dx, n, c, 2 * q + dz, 2 * r + dy, 2 * s + ddx)] += g.data[o] / 8;
          }
  return dx;
}

interface Saved {
  input: JsTensor;
  output: JsTensor;
  index?: Int32Array;
}

function forward(options: JsOptions, convs: readonly JsConv[], x: JsTensor): { taps: JsTensor[]; saved: Saved[]; modules: Module[] } {
  const all = modulesOf(options.arch);
  const tapIndex = options.layers.map((name) => all.findIndex((m) => m.name === name));
  if (tapIndex.some((i) => i < 0)) throw new Error(`js-reference: unknown tap in ${options.layers.join(', ')}`);
  const modules = all.slice(0, Math.max(...tapIndex) + 1);
  const saved: Saved[] = [];
  let h = x;
  for (const m of modules) {
    let out: JsTensor;
    let index: Int32Array | undefined;
    const volume = h.shape.length === 5;
    if (m.kind === 'conv') out = (volume ? conv3d : conv2d)(h, convs[m.conv!], m.outChannels!);
    else if (m.kind === 'relu') out = { shape: h.shape, data: h.data.map(relu) };
    else ({ out, index } = (volume ? pool3d : pool)(h, options.pool));
    saved.push({ input: h, output: out, index });
    h = out;
  }
  return { taps: tapIndex.map((i) => saved[i].output), saved, modules };
}

export function features(options: JsOptions, convs: readonly JsConv[], x: JsTensor): JsTensor[] {
  return forward(options, convs, x).taps;
}

function gram(f: JsTensor): Float64Array {
  const [N, C] = f.shape;
  const hw = spatialSize(f.shape);
  const g = new Float64Array(N * C * C);
  for (let n = 0; n < N; n++)
    for (let i = 0; i < C; i++)
      for (let j = 0; j < C; j++) {
        let sum = 0;
        for (let p = 0; p < hw; p++) sum += f.data[(n * C + i) * hw + p] * f.data[(n * C + j) * hw + p];
        g[(n * C + i) * C + j] = sum / (C * hw);
      }
  return g;
}

const CRITERIA = {
  l2: { value: (d: number) => d * d, grad: (d: number) => 2 * d },
  l1: { value: (d: number) => Math.abs(d), grad: (d: number) => (d > 0 ? 1 : d < 0 ? -1 : 0) },
  smooth_l1: {
    value: (d: number) => (Math.abs(d) < 1 ? 0.5 * d * d : Math.abs(d) - 0.5),
    grad: (d: number) => (Number.isNaN(d) ? NaN : Math.min(1, Math.max(-1, d))),
  },
} as const;

/**
 * D(a, b) per sample (summed over its elements), and d D / d a before the reduction's scale.
 * a and b are [N, per-sample elements] flattened. `factors` (one per sample) weight the samples:
 * 'mean' then sums the weighted means of the samples, 'sum' their weighted sums, 'none' gives
 * each sample's weighted mean.
 */
function distance(options: JsOptions, a: ArrayLike<number>, b: ArrayLike<number>, n: number, scale: number, factors?: readonly number[]) {
  const per = a.length / n;
  const crit = CRITERIA[options.criterion];
  const perSample = new Float64Array(n);
  const perSampleMagnitude = new Float64Array(n);
  const grad = new Float64Array(a.length);
  // What each sample's sum is divided by.
  const norm = options.reduction === 'sum' ? 1 : options.reduction === 'none' || factors ? per : a.length;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    const s = Math.floor(i / per);
    perSample[s] += crit.value(d);
    perSampleMagnitude[s] += crit.value(Math.abs(a[i]) + Math.abs(b[i]));
    grad[i] = (crit.grad(d) * scale * (factors ? factors[s] : 1)) / norm;
  }
  // mean: one value over all elements; sum: the total; none: the mean of each sample.
  const reduce = (sums: Float64Array) => {
    const weighted = Array.from(sums, (v, s) => ((v / norm) * scale) * (factors ? factors[s] : 1));
    return options.reduction === 'none' ? weighted : [weighted.reduce((t, v) => t + v, 0)];
  };
  // magnitude: the same reduction of D(|a| + |b|, 0), the size of what rounding errors scale with.
  return { values: reduce(perSample), magnitude: reduce(perSampleMagnitude), grad };
}

export interface JsResult {
  /** A number, or one value per sample with reduction 'none'. */
  loss: number | number[];
  /** [feature, style] per tap, summed over samples. */
  terms: Array<[number, number]>;
  /**
   * The loss with every difference a - b replaced by |a| + |b| (same shape as `loss`), and the
   * same per term: float32 rounding errors of a loss are a small fraction of these, however
   * much a - b cancels.
   */
  magnitude: number | number[];
  termMagnitudes: Array<[number, number]>;
  /**
   * Segmentation: the norm of d loss / d softmax output. The gradient with respect to the logits,
   * p * (g - sum_c g p), can cancel to far below it; rounding errors scale with this norm.
   */
  gradScale?: number;
  /** d loss / d pred, NCHW (of the sum of the per-sample losses for 'none'). */
  grad: Float64Array;
}

function combine(options: JsOptions, n: number, parts: number[][]): number | number[] {
  if (options.reduction !== 'none') return parts.reduce((s, p) => s + p[0], 0);
  return Array.from({ length: n }, (_, i) => parts.reduce((s, p) => s + p[i], 0));
}

function lossFromFeatures(options: JsOptions, predTaps: JsTensor[], targetTaps: JsTensor[], factors?: readonly number[]) {
  const parts: number[][] = [];
  const magnitudes: number[][] = [];
  const terms: Array<[number, number]> = [];
  const termMagnitudes: Array<[number, number]> = [];
  const tapGrads: Float64Array[] = [];
  const sum = (values: number[]) => values.reduce((s, v) => s + v, 0);
  predTaps.forEach((a, t) => {
    const b = targetTaps[t];
    const w = options.layerWeights[t];
    const n = a.shape[0];
    const feature = distance(options, a.data, b.data, n, options.featureWeight * w, factors);
    const grad = feature.grad;
    parts.push(feature.values);
    magnitudes.push(feature.magnitude);
    let styleTotal = 0;
    let styleMagnitude = 0;
    if (options.styleWeight > 0) {
      const C = a.shape[1];
      const ga = gram(a);
      const style = distance(options, ga, gram(b), n, options.styleWeight * w, factors);
      parts.push(style.values);
      magnitudes.push(style.magnitude);
      styleTotal = sum(style.values);
      styleMagnitude = sum(style.magnitude);
      // G = F F^T / k  =>  dF = (dG + dG^T) F / k.
      const hw = spatialSize(a.shape);
      for (let s = 0; s < n; s++)
        for (let i = 0; i < C; i++)
          for (let j = 0; j < C; j++) {
            // No shortcut for dg == 0: 0 * NaN is NaN, as in PyTorch's bmm.
            const dg = style.grad[(s * C + i) * C + j] + style.grad[(s * C + j) * C + i];
            for (let p = 0; p < hw; p++) grad[(s * C + i) * hw + p] += (dg * a.data[(s * C + j) * hw + p]) / (C * hw);
          }
    }
    terms.push([sum(feature.values), styleTotal]);
    termMagnitudes.push([sum(feature.magnitude), styleMagnitude]);
    tapGrads.push(grad);
  });
  return { parts, magnitudes, terms, termMagnitudes, tapGrads };
}

function backward(options: JsOptions, convs: readonly JsConv[], fwd: ReturnType<typeof forward>, tapGrads: Float64Array[]): Float64Array {
  const incoming = new Map<number, Float64Array>();
  options.layers.forEach((name, t) => {
    const k = fwd.modules.findIndex((m) => m.name === name);
    const prev = incoming.get(k);
    incoming.set(k, prev ? prev.map((v, i) => v + tapGrads[t][i]) : tapGrads[t]);
  });
  let g: JsTensor | undefined;
  for (let k = fwd.modules.length - 1; k >= 0; k--) {
    const extra = incoming.get(k);
    const s = fwd.saved[k];
    if (extra) g = g ? { shape: g.shape, data: g.data.map((v, i) => v + extra[i]) } : { shape: s.output.shape, data: extra.slice() };
    if (!g) continue;
    const m = fwd.modules[k];
    const volume = g.shape.length === 5;
    if (m.kind === 'conv') g = (volume ? conv3dBackInput : conv2dBackInput)(g, convs[m.conv!], s.input.shape[1]);
    else if (m.kind === 'relu') g = { shape: g.shape, data: g.data.map((v, i) => (s.output.data[i] <= 0 ? 0 : v)) };
    else g = (volume ? pool3dBack : poolBack)(g, s.input, options.pool, s.index);
  }
  return g!.data;
}

/**
 * The loss of docs/api.md and its gradient with respect to pred (both channels first). `factors`
 * (one per sample) weight the samples as `distance` says.
 */
export function lossAndGrad(options: JsOptions, convs: readonly JsConv[], pred: JsTensor, target: JsTensor, factors?: readonly number[]): JsResult {
  const fwd = forward(options, convs, pred);
  const targetTaps = forward(options, convs, target).taps;
  const { parts, magnitudes, terms, termMagnitudes, tapGrads } = lossFromFeatures(options, fwd.taps, targetTaps, factors);
  return {
    loss: combine(options, pred.shape[0], parts),
    terms,
    magnitude: combine(options, pred.shape[0], magnitudes),
    termMagnitudes,
    grad: backward(options, convs, fwd, tapGrads),
  };
}

/**
 * Segmentation: pred = softmax(logits) and target = one_hot(labels), masked at ignoreIndex.
 * logits [N, C, ...spatial], labels [N, ...spatial].
 */
export function segmentation(options: JsOptions, convs: readonly JsConv[], logits: JsTensor, labels: ArrayLike<number>, ignoreIndex: number): JsResult {
  const [N, C] = logits.shape;
  const S = spatialSize(logits.shape);
  const probs = zeros(logits.shape);
  const pred = zeros(logits.shape);
  const target = zeros(logits.shape);
  const mask = new Float64Array(N * S);
  const index = (n: number, c: number, p: number) => (n * C + c) * S + p;
  for (let n = 0; n < N; n++)
    for (let p = 0; p < S; p++) {
      const label = labels[n * S + p];
      const valid = label !== ignoreIndex;
      mask[n * S + p] = valid ? 1 : 0;
      let max = -Infinity;
      for (let c = 0; c < C; c++) max = Math.max(max, logits.data[index(n, c, p)]);
      let sum = 0;
      for (let c = 0; c < C; c++) sum += Math.exp(logits.data[index(n, c, p)] - max);
      for (let c = 0; c < C; c++) {
        const i = index(n, c, p);
        probs.data[i] = Math.exp(logits.data[i] - max) / sum;
        pred.data[i] = valid ? probs.data[i] : 0;
        target.data[i] = valid && label === c ? 1 : 0;
      }
    }
  const result = lossAndGrad(options, convs, pred, target);
  // Through the mask, then the softmax: dz = p * (g - sum_c g p).
  const dz = new Float64Array(result.grad.length);
  for (let n = 0; n < N; n++)
    for (let p = 0; p < S; p++) {
      const m = mask[n * S + p];
      let dot = 0;
      for (let c = 0; c < C; c++) {
        const i = index(n, c, p);
        dot += result.grad[i] * m * probs.data[i];
      }
      for (let c = 0; c < C; c++) {
        const i = index(n, c, p);
        dz[i] = probs.data[i] * (result.grad[i] * m - dot);
      }
    }
  const gradScale = Math.sqrt(result.grad.reduce((sum, v) => sum + v * v, 0));
  return { ...result, grad: dz, gradScale };
}

/**
 * Instance masks: pred = sigmoid(maskLogits) and target = masks ([M, 1, ...spatial]), the M
 * instances weighted by `weights` (docs/api.md: 'mean' gives sum_i w_i t_i / sum_i w_i, 'sum'
 * sum_i w_i s_i, 'none' the values w_i t_i); the gradient is with respect to the logits.
 */
export function instanceMasks(options: JsOptions, convs: readonly JsConv[], logits: JsTensor, masks: JsTensor, weights?: readonly number[]): JsResult {
  const p = Float64Array.from(logits.data, (v) => 1 / (1 + Math.exp(-v)));
  let factors: number[] | undefined;
  if (weights) {
    const total = weights.reduce((a, b) => a + b, 0);
    factors = options.reduction === 'mean' ? weights.map((w) => w / total) : [...weights];
  }
  const result = lossAndGrad(options, convs, { shape: logits.shape, data: p }, masks, factors);
  // d sigmoid(z) / dz = p (1 - p).
  return { ...result, grad: result.grad.map((g, i) => g * p[i] * (1 - p[i])) };
}

/**
 * pred and target multiplied by `mask` before the network ([N, 1, ...spatial] or pred's shape),
 * elements under a 0 set to 0 (NaN and Inf included); the gradient through it. `float32`: which
 * of pred and target are float32 arrays, whose products with the mask are float32 arrays too.
 */
export function masked(
  options: JsOptions,
  convs: readonly JsConv[],
  pred: JsTensor,
  target: JsTensor,
  mask: JsTensor,
  float32: { pred: boolean; target: boolean } = { pred: false, target: false },
): JsResult {
  const perPixel = mask.data.length !== pred.data.length;
  const [N, C] = pred.shape;
  const S = spatialSize(pred.shape);
  const m = (i: number) => (perPixel ? mask.data[Math.floor(i / (C * S)) * S + (i % S)] : mask.data[i]);
  const apply = (x: JsTensor, round: boolean) => ({ shape: x.shape, data: x.data.map((v, i) => (m(i) === 0 ? 0 : round ? Math.fround(v * m(i)) : v * m(i))) });
  if (perPixel && mask.data.length !== N * S) throw new Error('js-reference: a mask has one value per pixel or per element');
  const result = lossAndGrad(options, convs, apply(pred, float32.pred), apply(target, float32.target));
  return { ...result, grad: result.grad.map((g, i) => g * m(i)) };
}

/**
 * Channels last -> channels first: [N, ...spatial, C] -> [N, C, ...spatial] (or back with
 * `inverse`, the shape then given channels first), any rank and array type.
 */
export function transpose<A extends { length: number; [i: number]: number }>(
  data: A,
  shape: readonly number[],
  make: (length: number) => A,
  inverse = false,
): A {
  const n = shape[0];
  const ch = inverse ? shape[1] : shape[shape.length - 1];
  const size = (inverse ? shape.slice(2) : shape.slice(1, -1)).reduce((a, b) => a * b, 1);
  const out = make(data.length);
  for (let i = 0; i < n; i++)
    for (let p = 0; p < size; p++)
      for (let k = 0; k < ch; k++) {
        const first = (i * ch + k) * size + p;
        const last = (i * size + p) * ch + k;
        if (inverse) out[last] = data[first];
        else out[first] = data[last];
      }
  return out;
}
