// Checks tensor-like arguments against the network before they reach native code.
import type { NativeTargetHandle, NativeTensorHandle } from './binding';
import { PerceptualLossError, show } from './errors';
import type { Layout } from './options';
import { checkShape, elementCount, Tensor } from './tensor';

/**
 * A host value: row-major data of the given shape. Results derived from it (grad, features,
 * per-sample losses) come back as the same array type.
 */
export interface HostTensor<A extends Float32Array | Float64Array = Float32Array | Float64Array> {
  data: A;
  shape: readonly number[];
}

export type TensorLike = Tensor | HostTensor;

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

function checkHost(x: unknown, role: string, types: Array<new (n: number) => ArrayBufferView>): Operand {
  if (x === null || typeof x !== 'object' || !('data' in x) || !('shape' in x)) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role} must be a Tensor or { data, shape }; got ${show(x)}.`,
    );
  }
  const { data, shape } = x as { data: unknown; shape: unknown };
  if (!types.some((t) => data instanceof t)) {
    const names = types.map((t) => t.name).join(' or ');
    throw new PerceptualLossError('ERR_DTYPE', `${role}.data must be a ${names}; got ${show(data)}.`);
  }
  const dims = checkShape(shape, role);
  const length = (data as Float32Array).length;
  if (elementCount(dims) !== length) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role}.data holds ${length} elements but shape ${show(dims)} needs ${elementCount(dims)}.`,
    );
  }
  return { value: data as Float32Array, shape: dims, tensor: false };
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
      : checkHost(x, role, [Float32Array, Float64Array]);
  const dims = operand.shape;
  const order = check.layout === 'nhwc' ? '[N, H, W, C]' : '[N, C, H, W]';
  if (dims.length !== 4) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role} must be 4-D ${order} (layout '${check.layout}'); got shape ${show(dims)}.`,
    );
  }
  const [n, c, h, w] = check.layout === 'nhwc' ? [dims[0], dims[3], dims[1], dims[2]] : dims;
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
      : checkHost(x, 'labels', [Int32Array, Uint8Array]);
  const [n, h, w] = check.layout === 'nhwc' ? logits.shape.slice(0, 3) : [logits.shape[0], ...logits.shape.slice(2)];
  sameShape(operand.shape, [n, h, w], 'labels must be [N, H, W] of the logits');
  return operand;
}
