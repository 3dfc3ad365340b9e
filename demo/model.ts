// A small fully convolutional segmentation network (a two-level U-Net) in tfjs-core.
import * as tf from '@tensorflow/tfjs-core';
import type { GradSaveFunc, Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-core';
import { normal, type Random } from '../scripts/random';

/** The top (= left) padding of a 'same' convolution, as tfjs computes it. */
function padBefore(inSize: number, outSize: number, k: number, stride: number): number {
  return Math.floor(Math.max(0, (outSize - 1) * stride + k - inSize) / 2);
}

/**
 * d loss / d filter of a 'same' convolution with a k x k filter and the given stride, for NHWC x
 * and the output gradient g [N, outH, outW, outC].
 *
 * tfjs-backend-cpu's Conv2DBackpropFilter kernel reads its inputs through per-element generic
 * accessors and runs some 60x slower than the forward convolution (8 s instead of 0.1 s for a
 * 16-channel 64x64 batch of 8), which would make training on the CPU backend impractical. This loop
 * computes the same sum at about the forward pass's speed.
 */
function filterGradient(x: Tensor4D, g: Float32Array, outShape: number[], k: number, stride: number): Tensor4D {
  const [n, h, w, inC] = x.shape;
  const [, oh, ow, outC] = outShape;
  const xs = x.dataSync() as Float32Array;
  const out = new Float32Array(k * k * inC * outC);
  const top = padBefore(h, oh, k, stride);
  const left = padBefore(w, ow, k, stride);
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
              for (let o = 0; o < outC; o++) out[base + o] += xv * g[g0 + o];
            }
          }
        }
      }
    }
  }
  return tf.tensor4d(out, [k, k, inC, outC]);
}

type ConvFn = (inputs: Tensor4D[], filters: Tensor4D[], bias: Tensor1D) => Tensor4D;

/**
 * relu?(sum_i conv(inputs[i], filters[i]) + bias) as one customGrad op: a conv over the channel
 * concatenation of the inputs, without the concatenation (the gradient of a concat, a split along
 * the last axis, is slow on the CPU backend). The forward pass uses the backend's fused
 * conv + bias + activation kernel; the backward pass, the backend's input-gradient kernel and
 * `filterGradient` above, with the ReLU mask and the bias gradient done in the same JS pass.
 */
export function convOp(count: number, stride: number, relu: boolean): ConvFn {
  const attrs = (activation: string) => ({ strides: stride, pad: 'same', dataFormat: 'NHWC', dilations: 1, activation });
  const op = tf.customGrad((...args: Array<Tensor | GradSaveFunc>) => {
    const save = args.pop() as GradSaveFunc;
    const tensors = args as Tensor[];
    const inputs = tensors.slice(0, count) as Tensor4D[];
    const filters = tensors.slice(count, 2 * count) as Tensor4D[];
    // Each conv's "bias" is the running sum: the first gets the bias, the next the first's output.
    let y = tensors[2 * count];
    for (let i = 0; i < count; i++) {
      const activation = relu && i === count - 1 ? 'relu' : 'linear';
      y = tf.engine().runKernel<Tensor>(tf.FusedConv2D, { x: inputs[i], filter: filters[i], bias: y }, attrs(activation));
    }
    save([...inputs, ...filters, y]);
    return {
      value: y as Tensor4D,
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const out = saved[2 * count];
        const dys = dy.dataSync() as Float32Array;
        const ys = out.dataSync() as Float32Array;
        const outC = (out.shape as number[])[3];
        // ReLU'(z) is 1 exactly where the output is positive; the bias gradient sums g.
        const g = new Float32Array(dys.length);
        const dBias = new Float32Array(outC);
        for (let p = 0; p < g.length; p++) {
          const v = relu && ys[p] <= 0 ? 0 : dys[p];
          g[p] = v;
          dBias[p % outC] += v;
        }
        const gT = tf.tensor4d(g, out.shape as [number, number, number, number]);
        const dInputs = saved.slice(0, count).map(
          (x, i) =>
            tf.engine().runKernel<Tensor>(
              tf.Conv2DBackpropInput,
              { dy: gT, filter: saved[count + i] },
              { ...attrs('linear'), inputShape: x.shape },
            ),
        );
        const dFilters = saved
          .slice(0, count)
          .map((x, i) => filterGradient(x as Tensor4D, g, out.shape, saved[count + i].shape[0], stride));
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
