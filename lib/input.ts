// Checks tensor-like arguments against the network before they reach native code.
import type { NativeTargetHandle, NativeTensorHandle } from './binding';
import { PerceptualLossError, show } from './errors';
import type { Layout } from './options';
import { Tensor } from './tensor';
import { hostTensor, nchwDims } from './validate';

/**
 * A host value: row-major data of the given shape. Results derived from it (grad, features,
 * per-sample losses) come back as the same array type.
 */
export interface HostTensor<A extends Float32Array | Float64Array = Float32Array | Float64Array> {
  data: A;
  shape: readonly number[];
}

export type TensorLike = Tensor | HostTensor;

/** What a result derived from an input P is: a Tensor for a Tensor, else P's array type. */
export type ResultFor<P> = P extends Tensor ? Tensor : P extends HostTensor<infer A> ? A : Float32Array | Float64Array;

/** Integer class ids [N, H, W]: a host value or an int32 / uint8 Tensor. */
export type LabelsLike = Tensor | { data: Int32Array | Uint8Array; shape: readonly number[] };

export interface Operand {
  value: Float32Array | Float64Array | Int32Array | Uint8Array | NativeTensorHandle | NativeTargetHandle;
  shape: number[];
  tensor: boolean;
}

export interface ImageCheck {
  layout: Layout;
  inChannels: number;
  minSize: number;
  device: string;
}

function host(x: unknown, role: string, types: Array<new (n: number) => ArrayBufferView>): Operand {
  const { data, shape } = hostTensor<Float32Array | Float64Array | Int32Array | Uint8Array>(x, role, types);
  return { value: data, shape, tensor: false };
}

function checkTensor(x: Tensor, role: string, device: string, dtypes: string[]): Operand {
  const handle = Tensor.handle(x);
  if (handle.device !== device) {
    throw new PerceptualLossError(
      'ERR_DEVICE',
      `${role} is on ${handle.device} but the loss runs on ${device}; create it with Tensor.from(data, shape, { device: '${device}' }).`,
    );
  }
  if (!dtypes.includes(handle.dtype)) {
    throw new PerceptualLossError('ERR_DTYPE', `${role} is a ${handle.dtype} Tensor; expected ${dtypes.join(' or ')}.`);
  }
  return { value: handle, shape: handle.shape, tensor: true };
}

/** [N, C, H, W] in the call's layout, checked against inChannels and the deepest tap. */
export function readImage(x: unknown, role: string, check: ImageCheck): Operand {
  const operand =
    x instanceof Tensor
      ? checkTensor(x, role, check.device, ['float32', 'float64'])
      : host(x, role, [Float32Array, Float64Array]);
  const dims = operand.shape;
  const order = check.layout === 'nhwc' ? '[N, H, W, C]' : '[N, C, H, W]';
  if (dims.length !== 4) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role} must be 4-D ${order} (layout '${check.layout}'); got shape ${show(dims)}.`,
    );
  }
  const [n, c, h, w] = nchwDims(dims, check.layout);
  if (n === 0 || c === 0 || h === 0 || w === 0) {
    throw new PerceptualLossError('ERR_SHAPE', `${role} is empty: shape ${show(dims)} ${order}.`);
  }
  if (c !== check.inChannels) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role} has ${c} channels (shape ${show(dims)}, ${order}) but the loss was built with inChannels: ${check.inChannels}.`,
    );
  }
  if (h < check.minSize || w < check.minSize) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role} is ${h}x${w} but the deepest tap needs H and W of at least ${check.minSize} (minimum size ${check.minSize}x${check.minSize}).`,
    );
  }
  return operand;
}

export function sameShape(a: readonly number[], b: readonly number[], what: string): void {
  if (a.length !== b.length || a.some((d, i) => d !== b[i])) {
    throw new PerceptualLossError('ERR_SHAPE', `${what}: shapes differ, ${show(a)} and ${show(b)}.`);
  }
}

/** Labels [N, H, W] matching the logits' N, H and W. */
export function readLabels(x: unknown, logits: Operand, check: ImageCheck): Operand {
  const operand =
    x instanceof Tensor
      ? checkTensor(x, 'labels', check.device, ['int32', 'uint8'])
      : host(x, 'labels', [Int32Array, Uint8Array]);
  const [n, , h, w] = nchwDims(logits.shape, check.layout);
  sameShape(operand.shape, [n, h, w], 'labels must be [N, H, W] of the logits');
  return operand;
}
