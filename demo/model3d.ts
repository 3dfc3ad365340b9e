// A small fully convolutional 3-D segmentation network (a two-level 3-D U-Net) in tfjs-core, for
// the volumetric vessels task. tfjs-backend-cpu has Conv3D kernels, but their gradients are not
// registered in tfjs-core's CommonJS build (see gradients.ts) and its Conv3DBackpropFilterV2 reads
// every element through generic accessors: as in model.ts, the convolutions are the demo's own
// loops, one customGrad op each, and the test checks them against tf.conv3d, the backend's own
// gradient kernels and finite differences.
import * as tf from '@tensorflow/tfjs-core';
import type { GradSaveFunc, Tensor, Tensor1D, Tensor5D } from '@tensorflow/tfjs-core';
import { normal, type Random } from '../tools/random';

/** The front padding of a 'same' convolution along one axis, as tfjs computes it. */
function padBefore(inSize: number, outSize: number, k: number, stride: number): number {
  return Math.floor(Math.max(0, (outSize - 1) * stride + k - inSize) / 2);
}

/** Output channels accumulated together in locals. */
const BLOCK = 4;

export interface Conv3dGeometry {
  n: number;
  d: number;
  h: number;
  w: number;
  inC: number;
  od: number;
  oh: number;
  ow: number;
  outC: number;
  k: number;
  stride: number;
  front: number;
  top: number;
  left: number;
}

export function geometry3d(xShape: readonly number[], k: number, stride: number, outC: number): Conv3dGeometry {
  const [n, d, h, w, inC] = xShape;
  const [od, oh, ow] = [d, h, w].map((s) => Math.ceil(s / stride));
  return { n, d, h, w, inC, od, oh, ow, outC, k, stride, front: padBefore(d, od, k, stride), top: padBefore(h, oh, k, stride), left: padBefore(w, ow, k, stride) };
}

/**
 * y[b, i, j, l, o] += sum over kd, kh, kw, c of x[b, i*s + kd - front, j*s + kh - top,
 * l*s + kw - left, c] * wT[o, kd, kh, kw, c]: a 'same' convolution with the filter stored output
 * channel first. Along W the taps (kw, c) of one (kd, kh) are contiguous in both x (stride 1) and
 * the filter, so the innermost loop runs over them as one stretch.
 */
function convolve(xs: Float32Array, wT: Float32Array, ys: Float32Array, g: Conv3dGeometry): void {
  const { n, d, h, w, inC, od, oh, ow, outC, k, stride, front, top, left } = g;
  const perOut = k * k * k * inC;
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < od; i++) {
      const i0 = i * stride - front;
      const kdLo = Math.max(0, -i0);
      const kdHi = Math.min(k, d - i0);
      for (let j = 0; j < oh; j++) {
        const j0 = j * stride - top;
        const khLo = Math.max(0, -j0);
        const khHi = Math.min(k, h - j0);
        for (let l = 0; l < ow; l++) {
          const l0 = l * stride - left;
          const kwLo = Math.max(0, -l0);
          const kwHi = Math.min(k, w - l0);
          // The (kw, c) taps of one (kd, kh) are adjacent voxels whatever the stride: one stretch.
          const run = (kwHi - kwLo) * inC;
          const y0 = (((b * od + i) * oh + j) * ow + l) * outC;
          for (let o = 0; o < outC; o += BLOCK) {
            const lanes = Math.min(BLOCK, outC - o);
            let a0 = 0;
            let a1 = 0;
            let a2 = 0;
            let a3 = 0;
            for (let kd = kdLo; kd < kdHi; kd++) {
              for (let kh = khLo; kh < khHi; kh++) {
                const x0 = (((b * d + i0 + kd) * h + j0 + kh) * w + l0 + kwLo) * inC;
                const w0 = o * perOut + ((kd * k + kh) * k + kwLo) * inC;
                if (lanes === BLOCK) {
                  const w1 = w0 + perOut;
                  const w2 = w1 + perOut;
                  const w3 = w2 + perOut;
                  for (let c = 0; c < run; c++) {
                    const xv = xs[x0 + c];
                    a0 += xv * wT[w0 + c];
                    a1 += xv * wT[w1 + c];
                    a2 += xv * wT[w2 + c];
                    a3 += xv * wT[w3 + c];
                  }
                } else {
                  // The last output channels, fewer than a block (the 1-channel output).
                  for (let c = 0; c < run; c++) {
                    const xv = xs[x0 + c];
                    a0 += xv * wT[w0 + c];
                    if (lanes > 1) a1 += xv * wT[w0 + perOut + c];
                    if (lanes > 2) a2 += xv * wT[w0 + 2 * perOut + c];
                  }
                }
              }
            }
            ys[y0 + o] += a0;
            if (lanes > 1) ys[y0 + o + 1] += a1;
            if (lanes > 2) ys[y0 + o + 2] += a2;
            if (lanes > 3) ys[y0 + o + 3] += a3;
          }
        }
      }
    }
  }
}

/** [k, k, k, inC, outC] (tfjs' filter layout) -> [outC, k, k, k, inC]. */
function outputChannelFirst(ws: Float32Array, k: number, inC: number, outC: number): Float32Array {
  const wT = new Float32Array(ws.length);
  const perOut = k * k * k * inC;
  for (let p = 0; p < perOut; p++) {
    for (let o = 0; o < outC; o++) wT[o * perOut + p] = ws[p * outC + o];
  }
  return wT;
}

/**
 * dx[b, ii, jj, ll, c] = sum over the (i, j, l, kd, kh, kw) with ii = i*s + kd - front (and
 * likewise for jj, ll) of g[b, i, j, l, o] * w[kd, kh, kw, c, o]: the gradient of `convolve` with
 * respect to its input. With stride 1 that is a 'same' convolution of g with the filter flipped in
 * space and its channels swapped, which `convolve` runs at its own speed.
 */
function inputGradient(gs: Float32Array, ws: Float32Array, g: Conv3dGeometry): Float32Array {
  const { n, d, h, w, inC, od, oh, ow, outC, k, stride, front, top, left } = g;
  const dx = new Float32Array(n * d * h * w * inC);
  if (stride === 1) {
    const taps = k * k * k;
    // flipped[c, t', o] = w[taps - 1 - t', c, o]: output channel (c) first, as `convolve` reads it.
    const flipped = new Float32Array(ws.length);
    for (let t = 0; t < taps; t++) {
      for (let c = 0; c < inC; c++) flipped.set(ws.subarray((t * inC + c) * outC, (t * inC + c + 1) * outC), (c * taps + taps - 1 - t) * outC);
    }
    convolve(gs, flipped, dx, geometry3d([n, od, oh, ow, outC], k, 1, inC));
    return dx;
  }
  // The output index of a tap along one axis, or -1 where none lands there.
  const source = (pos: number, pad: number, kk: number, out: number) => {
    const delta = pos + pad - kk;
    if (delta < 0 || delta % stride !== 0) return -1;
    const q = delta / stride;
    return q < out ? q : -1;
  };
  for (let b = 0; b < n; b++) {
    for (let ii = 0; ii < d; ii++) {
      for (let jj = 0; jj < h; jj++) {
        for (let ll = 0; ll < w; ll++) {
          const x0 = (((b * d + ii) * h + jj) * w + ll) * inC;
          for (let kd = 0; kd < k; kd++) {
            const i = source(ii, front, kd, od);
            if (i < 0) continue;
            for (let kh = 0; kh < k; kh++) {
              const j = source(jj, top, kh, oh);
              if (j < 0) continue;
              for (let kw = 0; kw < k; kw++) {
                const l = source(ll, left, kw, ow);
                if (l < 0) continue;
                const g0 = (((b * od + i) * oh + j) * ow + l) * outC;
                const wk = ((kd * k + kh) * k + kw) * inC;
                for (let c = 0; c < inC; c++) {
                  const w0 = (wk + c) * outC;
                  let a = 0;
                  for (let o = 0; o < outC; o++) a += gs[g0 + o] * ws[w0 + o];
                  dx[x0 + c] += a;
                }
              }
            }
          }
        }
      }
    }
  }
  return dx;
}

/**
 * d loss / d filter [k, k, k, inC, outC] of `convolve`, for NDHWC x and the output gradient g: per
 * tap, input channel and block of four output channels, a sum over the output voxels where the
 * tap lands inside x, run along W in the innermost loop with the four sums in locals.
 */
function filterGradient(xs: Float32Array, gs: Float32Array, g: Conv3dGeometry): Float32Array {
  const { n, d, h, w, inC, od, oh, ow, outC, k, stride, front, top, left } = g;
  const out = new Float32Array(k * k * k * inC * outC);
  // The output positions along one axis whose tap kk lands inside [0, size).
  const range = (kk: number, pad: number, size: number, outSize: number): [number, number] => [
    Math.max(0, Math.ceil((pad - kk) / stride)),
    Math.min(outSize, Math.floor((size - 1 + pad - kk) / stride) + 1),
  ];
  const xStep = stride * inC;
  for (let kd = 0; kd < k; kd++) {
    const [iLo, iHi] = range(kd, front, d, od);
    for (let kh = 0; kh < k; kh++) {
      const [jLo, jHi] = range(kh, top, h, oh);
      for (let kw = 0; kw < k; kw++) {
        const [lLo, lHi] = range(kw, left, w, ow);
        const t = (kd * k + kh) * k + kw;
        for (let c = 0; c < inC; c++) {
          for (let o = 0; o < outC; o += BLOCK) {
            const lanes = Math.min(BLOCK, outC - o);
            let a0 = 0;
            let a1 = 0;
            let a2 = 0;
            let a3 = 0;
            for (let b = 0; b < n; b++) {
              for (let i = iLo; i < iHi; i++) {
                for (let j = jLo; j < jHi; j++) {
                  let xp = (((b * d + i * stride + kd - front) * h + j * stride + kh - top) * w + lLo * stride + kw - left) * inC + c;
                  let gp = (((b * od + i) * oh + j) * ow + lLo) * outC + o;
                  if (lanes === BLOCK) {
                    for (let l = lLo; l < lHi; l++, xp += xStep, gp += outC) {
                      const xv = xs[xp];
                      a0 += xv * gs[gp];
                      a1 += xv * gs[gp + 1];
                      a2 += xv * gs[gp + 2];
                      a3 += xv * gs[gp + 3];
                    }
                  } else {
                    for (let l = lLo; l < lHi; l++, xp += xStep, gp += outC) {
                      const xv = xs[xp];
                      a0 += xv * gs[gp];
                      if (lanes > 1) a1 += xv * gs[gp + 1];
                      if (lanes > 2) a2 += xv * gs[gp + 2];
                    }
                  }
                }
              }
            }
            const base = (t * inC + c) * outC + o;
            out[base] = a0;
            if (lanes > 1) out[base + 1] = a1;
            if (lanes > 2) out[base + 2] = a2;
            if (lanes > 3) out[base + 3] = a3;
          }
        }
      }
    }
  }
  return out;
}

type Conv3dFn = (inputs: Tensor5D[], filters: Tensor5D[], bias: Tensor1D) => Tensor5D;
type Shape5 = [number, number, number, number, number];

const values = (t: Tensor) => t.dataSync() as Float32Array;

/**
 * relu?(sum_i conv3d(inputs[i], filters[i]) + bias), 'same' padding, NDHWC, as one customGrad op:
 * a conv over the channel concatenation of the inputs without the concatenation (a U-Net's skip).
 */
export function conv3dOp(count: number, stride: number, relu: boolean): Conv3dFn {
  const op = tf.customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const save = args.pop() as GradSaveFunc;
    const tensors = args as Tensor[];
    const inputs = tensors.slice(0, count) as Tensor5D[];
    const filters = tensors.slice(count, 2 * count) as Tensor5D[];
    const bias = values(tensors[2 * count]);
    const [k, , , , outC] = filters[0].shape;
    const geometries = inputs.map((x) => geometry3d(x.shape, k, stride, outC));
    const { n, od, oh, ow } = geometries[0];
    const ys = new Float32Array(n * od * oh * ow * outC);
    for (let p = 0; p < ys.length; p += outC) ys.set(bias, p);
    inputs.forEach((x, i) => convolve(values(x), outputChannelFirst(values(filters[i]), k, geometries[i].inC, outC), ys, geometries[i]));
    if (relu) for (let p = 0; p < ys.length; p++) if (ys[p] < 0) ys[p] = 0;
    const y = tf.tensor5d(ys, [n, od, oh, ow, outC]);
    save([...inputs, ...filters, y]);
    return {
      value: y,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const dys = values(dy);
        const out = values(saved[2 * count]);
        const gs = new Float32Array(dys.length);
        const dBias = new Float32Array(outC);
        for (let p = 0; p < gs.length; p++) {
          const v = relu && out[p] <= 0 ? 0 : dys[p];
          gs[p] = v;
          dBias[p % outC] += v;
        }
        const dInputs = geometries.map((g, i) => tf.tensor5d(inputGradient(gs, values(saved[count + i]), g), saved[i].shape as Shape5));
        const dFilters = geometries.map((g, i) => tf.tensor5d(filterGradient(values(saved[i]), gs, g), saved[count + i].shape as Shape5));
        return [...dInputs, ...dFilters, tf.tensor1d(dBias)];
      },
    };
  });
  return (inputs, filters, bias) => op(...inputs, ...filters, bias);
}

/**
 * Nearest-neighbour upsampling of NDHWC `x` to the spatial size `to` (each voxel of x fills the
 * 2x2x2 block it came from; an odd size takes the last one once): the decoder's upsampling. Its
 * gradient sums each block back.
 */
export function upsample3d(x: Tensor5D, to: readonly [number, number, number]): Tensor5D {
  const [n, d, h, w, c] = x.shape;
  const [td, th, tw] = to;
  const index = (b: number, i: number, j: number, l: number) =>
    (((b * d + Math.min(d - 1, i >> 1)) * h + Math.min(h - 1, j >> 1)) * w + Math.min(w - 1, l >> 1)) * c;
  const op = tf.customGrad(((input: Tensor, save: GradSaveFunc) => {
    const xs = values(input);
    const ys = new Float32Array(n * td * th * tw * c);
    let p = 0;
    for (let b = 0; b < n; b++)
      for (let i = 0; i < td; i++)
        for (let j = 0; j < th; j++)
          for (let l = 0; l < tw; l++, p += c) ys.set(xs.subarray(index(b, i, j, l), index(b, i, j, l) + c), p);
    save([]);
    return {
      value: tf.tensor5d(ys, [n, td, th, tw, c]),
      gradFunc: (dy: Tensor) => {
        const gs = values(dy);
        const dx = new Float32Array(n * d * h * w * c);
        let q = 0;
        for (let b = 0; b < n; b++)
          for (let i = 0; i < td; i++)
            for (let j = 0; j < th; j++)
              for (let l = 0; l < tw; l++, q += c) {
                const x0 = index(b, i, j, l);
                for (let cc = 0; cc < c; cc++) dx[x0 + cc] += gs[q + cc];
              }
        return tf.tensor5d(dx, x.shape);
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(x) as Tensor5D;
}

interface Conv3d {
  filters: tf.Variable<tf.Rank.R5>[];
  bias: tf.Variable<tf.Rank.R1>;
  fn: Conv3dFn;
}

/** A 3-D conv layer over one or more inputs, He-normal weights and zero biases drawn from `random`. */
function conv3d(random: Random, name: string, k: number, inCs: number[], outC: number, opts: { stride?: number; relu?: boolean } = {}): Conv3d {
  const { stride = 1, relu = true } = opts;
  const fanIn = k * k * k * inCs.reduce((a, b) => a + b, 0);
  const std = Math.sqrt((relu ? 2 : 1) / fanIn);
  const filters = inCs.map((inC, i) => {
    const data = new Float32Array(k * k * k * inC * outC);
    for (let j = 0; j < data.length; j++) data[j] = std * normal(random);
    return tf.variable(tf.tensor5d(data, [k, k, k, inC, outC]), true, `${name}/filter${i}`);
  });
  return { filters, bias: tf.variable(tf.zeros([outC]), true, `${name}/bias`), fn: conv3dOp(inCs.length, stride, relu) };
}

function apply(layer: Conv3d, ...inputs: Tensor5D[]): Tensor5D {
  return layer.fn(inputs, layer.filters, layer.bias);
}

export interface VesselNetOptions {
  inChannels: number;
  /** Channels at full resolution; 2x at 1/2. */
  width: number;
}

export interface VesselNet {
  /** Logits [N, D, H, W, 1] of volumes [N, D, H, W, inChannels]; D, H and W even. */
  forward(x: Tensor5D): Tensor5D;
  readonly variables: tf.Variable[];
  readonly parameterCount: number;
  dispose(): void;
}

/**
 * Encoder: two 3x3x3 convs at full resolution, then a stride-2 3x3x3 conv and another at 1/2.
 * Decoder: a 3x3x3 conv at 1/2 down to `width` channels, nearest upsampling, and one linear
 * 3x3x3 conv over [upsampled, skip] at full resolution that gives the logit. Receptive field 17
 * voxels: a tube of radius 1.5 and a blob of radius 3 look different inside it.
 *
 * Why no ReLU conv and 1x1 head at the end, as in model.ts: with so few channels, training with
 * BCE drove the decoder's features to 0 on vessel voxels (a ReLU that no longer fires), so their
 * logit was the head's bias, which the background holds below 0: no vessel voxel ever crossed
 * p = 0.5. A linear last conv reads the encoder's features over 27 voxels directly. It also costs
 * a quarter of the old pair: ~1.0k multiply-adds per voxel at width 4 in all, most at full
 * resolution.
 */
export function createVesselNet(options: VesselNetOptions, random: Random): VesselNet {
  const { inChannels, width: w } = options;
  const layers = {
    enc1a: conv3d(random, 'enc1a', 3, [inChannels], w),
    enc1b: conv3d(random, 'enc1b', 3, [w], w),
    enc2a: conv3d(random, 'enc2a', 3, [w], 2 * w, { stride: 2 }),
    enc2b: conv3d(random, 'enc2b', 3, [2 * w], 2 * w),
    dec2: conv3d(random, 'dec2', 3, [2 * w], w),
    out: conv3d(random, 'out', 3, [w, w], 1, { relu: false }),
  };
  const variables = Object.values(layers).flatMap((l) => [...l.filters, l.bias]);
  return {
    forward(x) {
      return tf.tidy(() => {
        const e1 = apply(layers.enc1b, apply(layers.enc1a, x));
        const e2 = apply(layers.enc2b, apply(layers.enc2a, e1));
        const d2 = apply(layers.dec2, e2);
        return apply(layers.out, upsample3d(d2, [e1.shape[1], e1.shape[2], e1.shape[3]]), e1);
      });
    },
    variables,
    parameterCount: variables.reduce((n, v) => n + v.size, 0),
    dispose() {
      for (const v of variables) v.dispose();
    },
  };
}
