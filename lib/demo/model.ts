// A small fully convolutional segmentation network (a two-level U-Net) in plain tfjs-core.
import * as tf from '@tensorflow/tfjs-core';
import { normal, type Random } from './random';

interface Conv {
  filter: tf.Variable<tf.Rank.R4>;
  bias: tf.Variable<tf.Rank.R1>;
}

export interface SegNetOptions {
  inChannels: number;
  classes: number;
  /** Channels of the first level; the second has 2x, the bottleneck 4x. */
  width: number;
}

export interface SegNet {
  /** Logits [N, H, W, classes] for images [N, H, W, inChannels] (H and W divisible by 4). */
  forward(x: tf.Tensor4D): tf.Tensor4D;
  readonly variables: tf.Variable[];
  readonly parameterCount: number;
  dispose(): void;
}

/**
 * He-normal weights (std sqrt(2 / fan_in)) and zero biases, drawn from `random` rather than
 * tfjs' initializers so the seed alone fixes them.
 */
function conv(random: Random, size: number, inC: number, outC: number, name: string): Conv {
  const std = Math.sqrt(2 / (size * size * inC));
  const values = new Float32Array(size * size * inC * outC);
  for (let i = 0; i < values.length; i++) values[i] = std * normal(random);
  return {
    filter: tf.variable(tf.tensor4d(values, [size, size, inC, outC]), true, `${name}/filter`),
    bias: tf.variable(tf.zeros([outC]), true, `${name}/bias`),
  };
}

/**
 * tf.fused.conv2d (conv + bias + ReLU in one kernel, 'same' padding). It is a customGrad op in
 * tfjs-core, so it trains without registered gradients for Conv2D.
 */
function apply(layer: Conv, x: tf.Tensor4D, activation: 'relu' | 'linear' = 'relu'): tf.Tensor4D {
  return tf.fused.conv2d({ x, filter: layer.filter, bias: layer.bias, strides: 1, pad: 'same', activation });
}

export function createSegNet(options: SegNetOptions, random: Random): SegNet {
  const { inChannels, classes, width: w } = options;
  const layers = {
    enc1a: conv(random, 3, inChannels, w, 'enc1a'),
    enc1b: conv(random, 3, w, w, 'enc1b'),
    enc2a: conv(random, 3, w, 2 * w, 'enc2a'),
    enc2b: conv(random, 3, 2 * w, 2 * w, 'enc2b'),
    midA: conv(random, 3, 2 * w, 4 * w, 'midA'),
    midB: conv(random, 3, 4 * w, 4 * w, 'midB'),
    dec2a: conv(random, 3, 6 * w, 2 * w, 'dec2a'),
    dec2b: conv(random, 3, 2 * w, 2 * w, 'dec2b'),
    dec1a: conv(random, 3, 3 * w, w, 'dec1a'),
    dec1b: conv(random, 3, w, w, 'dec1b'),
    head: conv(random, 1, w, classes, 'head'),
  };
  const variables = Object.values(layers).flatMap((l) => [l.filter, l.bias]);
  const pool = (x: tf.Tensor4D) => tf.maxPool(x, 2, 2, 'valid');
  const up = (x: tf.Tensor4D, like: tf.Tensor4D) => tf.image.resizeBilinear(x, [like.shape[1], like.shape[2]]);

  return {
    forward(x) {
      return tf.tidy(() => {
        const e1 = apply(layers.enc1b, apply(layers.enc1a, x));
        const e2 = apply(layers.enc2b, apply(layers.enc2a, pool(e1)));
        const m = apply(layers.midB, apply(layers.midA, pool(e2)));
        const d2 = apply(layers.dec2b, apply(layers.dec2a, tf.concat([up(m, e2), e2], 3)));
        const d1 = apply(layers.dec1b, apply(layers.dec1a, tf.concat([up(d2, e1), e1], 3)));
        return apply(layers.head, d1, 'linear');
      });
    },
    variables,
    parameterCount: variables.reduce((n, v) => n + v.size, 0),
    dispose() {
      for (const v of variables) v.dispose();
    },
  };
}
