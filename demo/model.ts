// A small fully convolutional segmentation network (a two-level U-Net) in tfjs-core.
import * as tf from '@tensorflow/tfjs-core';
import type { GradSaveFunc, Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-core';
import { normal, type Random } from '../tools/random';

/** The top (= left) padding of a 'same' convolution, as tfjs computes it. */
function padBefore(inSize: number, outSize: number, k: number, stride: number): number {
  return Math.floor(Math.max(0, (outSize - 1) * stride + k - inSize) / 2);
}

/**
 * The loops below replace tfjs-backend-cpu's convolution kernels for the demo's small NHWC convs.
 * Its Conv2D reads shapes and strides through objects in the innermost loop and updates one output
 * at a time; its Conv2DBackpropFilter reads through per-element generic accessors and runs some
 * 60x slower than the forward pass. Keeping four output channels in locals and running the
 * reduction over contiguous memory makes the forward and input-gradient passes ~2.5x faster than
 * the backend's, and the filter gradient as fast as the forward pass: the demo trains in half the
 * time. The test checks all three against tf.conv2d and the backend's own gradient kernels.
 */

/** Output channels accumulated together in locals. */
const BLOCK = 4;

interface ConvGeometry {
  n: number;
  h: number;
  w: number;
  inC: number;
  oh: number;
  ow: number;
  outC: number;
  k: number;
  stride: number;
  top: number;
  left: number;
}

function geometry(xShape: number[], k: number, stride: number, outC: number): ConvGeometry {
  const [n, h, w, inC] = xShape;
  const oh = Math.ceil(h / stride);
  const ow = Math.ceil(w / stride);
  return { n, h, w, inC, oh, ow, outC, k, stride, top: padBefore(h, oh, k, stride), left: padBefore(w, ow, k, stride) };
}

/**
 * y[b, i, j, o] += sum over ki, kj, c of x[b, i*stride + ki - top, j*stride + kj - left, c] *
 * wT[o, ki, kj, c]: a 'same' convolution with the filter stored output channel first, so that the
 * reduction over c reads both operands contiguously.
 */
function convolve(xs: Float32Array, wT: Float32Array, ys: Float32Array, g: ConvGeometry): void {
  const { n, h, w, inC, oh, ow, outC, k, stride, top, left } = g;
  const perOut = k * k * inC;
  const blocked = outC - (outC % BLOCK);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < oh; i++) {
      const i0 = i * stride - top;
      const kiLo = Math.max(0, -i0);
      const kiHi = Math.min(k, h - i0);
      for (let j = 0; j < ow; j++) {
        const j0 = j * stride - left;
        const kjLo = Math.max(0, -j0);
        const kjHi = Math.min(k, w - j0);
        const y0 = ((b * oh + i) * ow + j) * outC;
        for (let o = 0; o < outC; o += BLOCK) {
          const lanes = o < blocked ? BLOCK : outC - o;
          let a0 = 0;
          let a1 = 0;
          let a2 = 0;
          let a3 = 0;
          for (let ki = kiLo; ki < kiHi; ki++) {
            for (let kj = kjLo; kj < kjHi; kj++) {
              const x0 = ((b * h + i0 + ki) * w + j0 + kj) * inC;
              const w0 = o * perOut + (ki * k + kj) * inC;
              if (lanes === BLOCK) {
                const w1 = w0 + perOut;
                const w2 = w1 + perOut;
                const w3 = w2 + perOut;
                for (let c = 0; c < inC; c++) {
                  const xv = xs[x0 + c];
                  a0 += xv * wT[w0 + c];
                  a1 += xv * wT[w1 + c];
                  a2 += xv * wT[w2 + c];
                  a3 += xv * wT[w3 + c];
                }
              } else {
                // The last output channels, fewer than a block (a head of 5 classes, or of 1 depth).
                for (let c = 0; c < inC; c++) {
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

/** [k, k, inC, outC] (tfjs' filter layout) -> [outC, k, k, inC]. */
function outputChannelFirst(ws: Float32Array, k: number, inC: number, outC: number): Float32Array {
  const wT = new Float32Array(ws.length);
  const perOut = k * k * inC;
  for (let p = 0; p < k * k * inC; p++) {
    for (let o = 0; o < outC; o++) wT[o * perOut + p] = ws[p * outC + o];
  }
  return wT;
}

/**
 * dx[b, ii, jj, c] = sum over the (i, j, ki, kj) with ii = i*stride + ki - top (and likewise for
 * jj) of g[b, i, j, o] * w[ki, kj, c, o]: the gradient of `convolve` with respect to its input.
 * tfjs' filter layout already has o innermost, the reduction axis here.
 */
function inputGradient(gs: Float32Array, ws: Float32Array, g: ConvGeometry): Float32Array {
  const { n, h, w, inC, oh, ow, outC, k, stride, top, left } = g;
  const dx = new Float32Array(n * h * w * inC);
  const blocked = inC - (inC % BLOCK);
  for (let b = 0; b < n; b++) {
    for (let ii = 0; ii < h; ii++) {
      for (let jj = 0; jj < w; jj++) {
        const x0 = ((b * h + ii) * w + jj) * inC;
        for (let ki = 0; ki < k; ki++) {
          const di = ii + top - ki;
          if (di < 0 || di % stride !== 0 || di / stride >= oh) continue;
          const i = di / stride;
          for (let kj = 0; kj < k; kj++) {
            const dj = jj + left - kj;
            if (dj < 0 || dj % stride !== 0 || dj / stride >= ow) continue;
            const g0 = ((b * oh + i) * ow + dj / stride) * outC;
            const wk = (ki * k + kj) * inC;
            for (let c = 0; c < inC; c += BLOCK) {
              const w0 = (wk + c) * outC;
              if (c < blocked) {
                const w1 = w0 + outC;
                const w2 = w1 + outC;
                const w3 = w2 + outC;
                let a0 = 0;
                let a1 = 0;
                let a2 = 0;
                let a3 = 0;
                for (let o = 0; o < outC; o++) {
                  const gv = gs[g0 + o];
                  a0 += gv * ws[w0 + o];
                  a1 += gv * ws[w1 + o];
                  a2 += gv * ws[w2 + o];
                  a3 += gv * ws[w3 + o];
                }
                dx[x0 + c] += a0;
                dx[x0 + c + 1] += a1;
                dx[x0 + c + 2] += a2;
                dx[x0 + c + 3] += a3;
              } else {
                for (let cc = c; cc < inC; cc++) {
                  let a = 0;
                  const wc = (wk + cc) * outC;
                  for (let o = 0; o < outC; o++) a += gs[g0 + o] * ws[wc + o];
                  dx[x0 + cc] += a;
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

/** d loss / d filter [k, k, inC, outC] of `convolve`, for NHWC x and the output gradient g. */
function filterGradient(xs: Float32Array, gs: Float32Array, g: ConvGeometry): Float32Array {
  const { n, h, w, inC, oh, ow, outC, k, stride, top, left } = g;
  const out = new Float32Array(k * k * inC * outC);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        const g0 = ((b * oh + i) * ow + j) * outC;
        for (let ki = 0; ki < k; ki++) {
          const ii = i * stride + ki - top;
          if (ii < 0 || ii >= h) continue;
          for (let kj = 0; kj < k; kj++) {
            const jj = j * stride + kj - left;
            if (jj < 0 || jj >= w) continue;
            const x0 = ((b * h + ii) * w + jj) * inC;
            const o0 = (ki * k + kj) * inC;
            for (let c = 0; c < inC; c++) {
              const xv = xs[x0 + c];
              // Activations after a ReLU are often exactly 0: skip the row.
              if (xv === 0) continue;
              const base = (o0 + c) * outC;
              for (let o = 0; o < outC; o++) out[base + o] += xv * gs[g0 + o];
            }
          }
        }
      }
    }
  }
  return out;
}

type ConvFn = (inputs: Tensor4D[], filters: Tensor4D[], bias: Tensor1D) => Tensor4D;

const values = (t: Tensor) => t.dataSync() as Float32Array;

/**
 * relu?(sum_i conv(inputs[i], filters[i]) + bias), 'same' padding, as one customGrad op: a conv
 * over the channel concatenation of the inputs, without the concatenation (the gradient of a
 * concat, a split along the last axis, is slow on the CPU backend). The ReLU mask and the bias
 * gradient are applied in the same JS pass.
 */
export function convOp(count: number, stride: number, relu: boolean): ConvFn {
  const op = tf.customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const save = args.pop() as GradSaveFunc;
    const tensors = args as Tensor[];
    const inputs = tensors.slice(0, count) as Tensor4D[];
    const filters = tensors.slice(count, 2 * count) as Tensor4D[];
    const bias = values(tensors[2 * count]);
    const [k, , , outC] = filters[0].shape;
    const geometries = inputs.map((x) => geometry(x.shape, k, stride, outC));
    const { n, oh, ow } = geometries[0];
    const ys = new Float32Array(n * oh * ow * outC);
    for (let p = 0; p < ys.length; p += outC) ys.set(bias, p);
    inputs.forEach((x, i) => convolve(values(x), outputChannelFirst(values(filters[i]), k, geometries[i].inC, outC), ys, geometries[i]));
    if (relu) for (let p = 0; p < ys.length; p++) if (ys[p] < 0) ys[p] = 0;
    const y = tf.tensor4d(ys, [n, oh, ow, outC]);
    save([...inputs, ...filters, y]);
    return {
      value: y,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const dys = values(dy);
        const out = values(saved[2 * count]);
        // ReLU'(z) is 1 exactly where the output is positive; the bias gradient sums g.
        const gs = new Float32Array(dys.length);
        const dBias = new Float32Array(outC);
        for (let p = 0; p < gs.length; p++) {
          const v = relu && out[p] <= 0 ? 0 : dys[p];
          gs[p] = v;
          dBias[p % outC] += v;
        }
        const dInputs = geometries.map((g, i) => tf.tensor4d(inputGradient(gs, values(saved[count + i]), g), saved[i].shape as [number, number, number, number]));
        const dFilters = geometries.map((g, i) => tf.tensor4d(filterGradient(values(saved[i]), gs, g), saved[count + i].shape as [number, number, number, number]));
        return [...dInputs, ...dFilters, tf.tensor1d(dBias)];
      },
    };
  });
  return (inputs, filters, bias) => op(...inputs, ...filters, bias);
}

interface Conv {
  filters: tf.Variable<tf.Rank.R4>[];
  bias: tf.Variable<tf.Rank.R1>;
  fn: ConvFn;
}

/**
 * A conv layer over one or more inputs (channel counts `inCs`), with He-normal weights
 * (std sqrt(2 / fan_in)) and zero biases drawn from `random`, not tfjs' initializers, so the seed
 * alone fixes them.
 */
function conv(random: Random, name: string, k: number, inCs: number[], outC: number, opts: { stride?: number; relu?: boolean } = {}): Conv {
  const { stride = 1, relu = true } = opts;
  const fanIn = k * k * inCs.reduce((a, b) => a + b, 0);
  const std = Math.sqrt((relu ? 2 : 1) / fanIn);
  const filters = inCs.map((inC, i) => {
    const values = new Float32Array(k * k * inC * outC);
    for (let j = 0; j < values.length; j++) values[j] = std * normal(random);
    return tf.variable(tf.tensor4d(values, [k, k, inC, outC]), true, `${name}/filter${i}`);
  });
  return { filters, bias: tf.variable(tf.zeros([outC]), true, `${name}/bias`), fn: convOp(inCs.length, stride, relu) };
}

function apply(layer: Conv, ...inputs: Tensor4D[]): Tensor4D {
  return layer.fn(inputs, layer.filters, layer.bias);
}

export interface SegNetOptions {
  inChannels: number;
  classes: number;
  /** Channels at full resolution; 2x at 1/2, 4x at 1/4. */
  width: number;
}

export interface SegNet {
  /** Logits [N, H, W, classes] of images [N, H, W, inChannels]; H and W divisible by 4. */
  forward(x: Tensor4D): Tensor4D;
  readonly variables: tf.Variable[];
  readonly parameterCount: number;
  dispose(): void;
}

/**
 * Encoder: two 3x3 convs per level at full, 1/2 and 1/4 resolution; the first conv of the lower
 * levels has stride 2 (cheaper to train on the CPU backend than max pooling, whose gradient kernel
 * is slow). Decoder: bilinear upsampling, then a 3x3 conv over [upsampled, skip] at 1/2 and at full
 * resolution; a 1x1 conv gives the logits. Receptive field ~ 50 px.
 */
export function createSegNet(options: SegNetOptions, random: Random): SegNet {
  const { inChannels, classes, width: w } = options;
  const layers = {
    enc1a: conv(random, 'enc1a', 3, [inChannels], w),
    enc1b: conv(random, 'enc1b', 3, [w], w),
    enc2a: conv(random, 'enc2a', 3, [w], 2 * w, { stride: 2 }),
    enc2b: conv(random, 'enc2b', 3, [2 * w], 2 * w),
    mid1: conv(random, 'mid1', 3, [2 * w], 4 * w, { stride: 2 }),
    mid2: conv(random, 'mid2', 3, [4 * w], 4 * w),
    dec2: conv(random, 'dec2', 3, [4 * w, 2 * w], 2 * w),
    dec1: conv(random, 'dec1', 3, [2 * w, w], w),
    head: conv(random, 'head', 1, [w], classes, { relu: false }),
  };
  const variables = Object.values(layers).flatMap((l) => [...l.filters, l.bias]);
  const up = (x: Tensor4D, like: Tensor4D) => tf.image.resizeBilinear(x, [like.shape[1], like.shape[2]]);

  return {
    forward(x) {
      return tf.tidy(() => {
        const e1 = apply(layers.enc1b, apply(layers.enc1a, x));
        const e2 = apply(layers.enc2b, apply(layers.enc2a, e1));
        const m = apply(layers.mid2, apply(layers.mid1, e2));
        const d2 = apply(layers.dec2, up(m, e2), e2);
        const d1 = apply(layers.dec1, up(d2, e1), e1);
        return apply(layers.head, d1);
      });
    },
    variables,
    parameterCount: variables.reduce((n, v) => n + v.size, 0),
    dispose() {
      for (const v of variables) v.dispose();
    },
  };
}
