// An independent float64 implementation of the loss of docs/api.md in plain JavaScript: the network
// (3x3 convs, ReLU, 2x2 pools) forward and backward, the criteria, the reductions, the Gram
// term and segmentation. It is slow but needs no process, so the fuzz tests can check every
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

/** NCHW, float64. */
export interface JsTensor {
  shape: [number, number, number, number];
  data: Float64Array;
}

/** A conv's parameters, as in the state dict: weight [out, in, 3, 3], bias [out]. */
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

/** Smallest H and W that reach the deepest of `layers`: 2 ** (pools up to it). */
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

function zeros(shape: [number, number, number, number]): JsTensor {
  return { shape, data: new Float64Array(shape[0] * shape[1] * shape[2] * shape[3]) };
}

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
    if (m.kind === 'conv') out = conv2d(h, convs[m.conv!], m.outChannels!);
    else if (m.kind === 'relu') out = { shape: h.shape, data: h.data.map(relu) };
    else ({ out, index } = pool(h, options.pool));
    saved.push({ input: h, output: out, index });
    h = out;
  }
  return { taps: tapIndex.map((i) => saved[i].output), saved, modules };
}

export function features(options: JsOptions, convs: readonly JsConv[], x: JsTensor): JsTensor[] {
  return forward(options, convs, x).taps;
}

function gram(f: JsTensor): Float64Array {
  const [N, C, H, W] = f.shape;
  const hw = H * W;
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
 * a and b are [N, per-sample elements] flattened.
 */
function distance(options: JsOptions, a: ArrayLike<number>, b: ArrayLike<number>, n: number, scale: number) {
  const per = a.length / n;
  const crit = CRITERIA[options.criterion];
  const perSample = new Float64Array(n);
  const perSampleMagnitude = new Float64Array(n);
  const grad = new Float64Array(a.length);
  const factor = options.reduction === 'mean' ? scale / a.length : options.reduction === 'sum' ? scale : scale / per;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    perSample[Math.floor(i / per)] += crit.value(d);
    perSampleMagnitude[Math.floor(i / per)] += crit.value(Math.abs(a[i]) + Math.abs(b[i]));
    grad[i] = crit.grad(d) * factor;
  }
  // mean: one value over all elements; sum: the total; none: the mean of each sample.
  const reduce = (sums: Float64Array) =>
    options.reduction === 'none'
      ? Array.from(sums, (v) => (v / per) * scale)
      : [(sums.reduce((s, v) => s + v, 0) / (options.reduction === 'mean' ? a.length : 1)) * scale];
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

function lossFromFeatures(options: JsOptions, predTaps: JsTensor[], targetTaps: JsTensor[]) {
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
    const feature = distance(options, a.data, b.data, n, options.featureWeight * w);
    const grad = feature.grad;
    parts.push(feature.values);
    magnitudes.push(feature.magnitude);
    let styleTotal = 0;
    let styleMagnitude = 0;
    if (options.styleWeight > 0) {
      const [, C, H, W] = a.shape;
      const ga = gram(a);
      const style = distance(options, ga, gram(b), n, options.styleWeight * w);
      parts.push(style.values);
      magnitudes.push(style.magnitude);
      styleTotal = sum(style.values);
      styleMagnitude = sum(style.magnitude);
      // G = F F^T / k  =>  dF = (dG + dG^T) F / k.
      const hw = H * W;
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
    if (m.kind === 'conv') g = conv2dBackInput(g, convs[m.conv!], s.input.shape[1]);
    else if (m.kind === 'relu') g = { shape: g.shape, data: g.data.map((v, i) => (s.output.data[i] <= 0 ? 0 : v)) };
    else g = poolBack(g, s.input, options.pool, s.index);
  }
  return g!.data;
}

/** The loss of docs/api.md and its gradient with respect to pred (both NCHW). */
export function lossAndGrad(options: JsOptions, convs: readonly JsConv[], pred: JsTensor, target: JsTensor): JsResult {
  const fwd = forward(options, convs, pred);
  const targetTaps = forward(options, convs, target).taps;
  const { parts, magnitudes, terms, termMagnitudes, tapGrads } = lossFromFeatures(options, fwd.taps, targetTaps);
  return {
    loss: combine(options, pred.shape[0], parts),
    terms,
    magnitude: combine(options, pred.shape[0], magnitudes),
    termMagnitudes,
    grad: backward(options, convs, fwd, tapGrads),
  };
}

/** Segmentation: pred = softmax(logits) and target = one_hot(labels), masked at ignoreIndex. */
export function segmentation(options: JsOptions, convs: readonly JsConv[], logits: JsTensor, labels: ArrayLike<number>, ignoreIndex: number): JsResult {
  const [N, C, H, W] = logits.shape;
  const probs = zeros(logits.shape);
  const pred = zeros(logits.shape);
  const target = zeros(logits.shape);
  const mask = new Float64Array(N * H * W);
  for (let n = 0; n < N; n++)
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const label = labels[(n * H + y) * W + x];
        const valid = label !== ignoreIndex;
        mask[(n * H + y) * W + x] = valid ? 1 : 0;
        let max = -Infinity;
        for (let c = 0; c < C; c++) max = Math.max(max, logits.data[at(logits, n, c, y, x)]);
        let sum = 0;
        for (let c = 0; c < C; c++) sum += Math.exp(logits.data[at(logits, n, c, y, x)] - max);
        for (let c = 0; c < C; c++) {
          const i = at(logits, n, c, y, x);
          probs.data[i] = Math.exp(logits.data[i] - max) / sum;
          pred.data[i] = valid ? probs.data[i] : 0;
          target.data[i] = valid && label === c ? 1 : 0;
        }
      }
  const result = lossAndGrad(options, convs, pred, target);
  // Through the mask, then the softmax: dz = p * (g - sum_c g p).
  const dz = new Float64Array(result.grad.length);
  for (let n = 0; n < N; n++)
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const m = mask[(n * H + y) * W + x];
        let dot = 0;
        for (let c = 0; c < C; c++) {
          const i = at(logits, n, c, y, x);
          dot += result.grad[i] * m * probs.data[i];
        }
        for (let c = 0; c < C; c++) {
          const i = at(logits, n, c, y, x);
          dz[i] = probs.data[i] * (result.grad[i] * m - dot);
        }
      }
  const gradScale = Math.sqrt(result.grad.reduce((sum, v) => sum + v * v, 0));
  return { ...result, grad: dz, gradScale };
}

/** [N, H, W, C] -> [N, C, H, W] (or back with `inverse`), any array type. */
export function transpose<A extends { length: number; [i: number]: number }>(
  data: A,
  [n, a, b, c]: readonly number[],
  make: (length: number) => A,
  inverse = false,
): A {
  // nhwc -> nchw: shape given as [N, H, W, C]; inverse: shape given as [N, C, H, W].
  const out = make(data.length);
  if (!inverse) {
    const [h, w, ch] = [a, b, c];
    for (let i = 0; i < n; i++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) for (let k = 0; k < ch; k++) out[((i * ch + k) * h + y) * w + x] = data[((i * h + y) * w + x) * ch + k];
  } else {
    const [ch, h, w] = [a, b, c];
    for (let i = 0; i < n; i++)
      for (let k = 0; k < ch; k++)
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[((i * h + y) * w + x) * ch + k] = data[((i * ch + k) * h + y) * w + x];
  }
  return out;
}
