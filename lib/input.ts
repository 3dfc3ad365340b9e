// Reads the tensor-like arguments (images, labels, masks) and checks them against the network
// before they reach native code.
import type { NativeTargetHandle, NativeTensorHandle } from './binding';
import { PerceptualLossError, show, withArticle } from './errors';
import type { Layout } from './options';
import { Tensor } from './tensor';
import { elementCount, hostTensor } from './validate';

/**
 * A host value: row-major data of the given shape. Results derived from it (grad, features,
 * per-sample losses) come back as the same array type.
 */
export interface HostTensor<A extends Float32Array | Float64Array = Float32Array | Float64Array> {
  data: A;
  shape: readonly number[];
}

export type TensorLike = Tensor | HostTensor;

/** The host array of a float dtype. */
type FloatArrayOf<D> = D extends 'float64' ? Float64Array : D extends 'float32' ? Float32Array : never;

/**
 * What a result derived from an input P is (the gradient, the features): a Tensor of P's dtype on
 * P's device for a Tensor, else P's array type.
 */
export type ResultFor<P> = P extends Tensor<infer D> ? Tensor<D> : P extends HostTensor<infer A> ? A : Float32Array | Float64Array;

/**
 * The per-sample losses of reduction 'none' for an input P: always a host array, P's array type
 * for a host value, the array of its dtype for a Tensor.
 */
export type PerSampleFor<P> = P extends Tensor<infer D> ? FloatArrayOf<D> : P extends HostTensor<infer A> ? A : Float32Array | Float64Array;

/** Integer class ids [N, H, W]: a host value or an int32 / uint8 Tensor. */
export type LabelsLike = Tensor | { data: Int32Array | Uint8Array; shape: readonly number[] };

/** @internal */
export interface Operand {
  value: Float32Array | Float64Array | Int32Array | Uint8Array | NativeTensorHandle | NativeTargetHandle;
  shape: number[];
  tensor: boolean;
}

/**
 * Where the loss looks: 0 = left out, 1 = in (other values weight the element). One value per
 * pixel, [N, H, W] or [N, 1, H, W] ([N, H, W, 1] in 'nhwc'), shared by the channels, or one per
 * element in pred's shape and layout. A typed array alone is read by its length. A Tensor mask
 * is uint8, float32 or float64, on the loss's device.
 */
export type MaskLike =
  | Uint8Array
  | Float32Array
  | Float64Array
  | { data: Uint8Array | Float32Array | Float64Array; shape: readonly number[] }
  | Tensor;

/** @internal A mask as native code takes it: its data, shaped to broadcast over pred in the call's layout. */
export interface MaskOperand {
  value: Uint8Array | Float32Array | Float64Array | NativeTensorHandle;
  shape: number[];
}

/** @internal */
export interface ImageCheck {
  layout: Layout;
  inChannels: number;
  minSize: number;
  device: string;
  /** The taps in use that an input whose smaller side is `size` reaches (for the message of a too-small input). */
  tapsWithin?: (size: number) => string[];
}

function host(x: unknown, role: string, types: Array<new (n: number) => ArrayBufferView>): Operand {
  const { data, shape } = hostTensor<Float32Array | Float64Array | Int32Array | Uint8Array>(x, role, types);
  return { value: data, shape, tensor: false };
}

/** [N, C, H, W] of a 4-D shape given in `layout`. */
export function nchwDims(shape: readonly number[], layout: Layout): [number, number, number, number] {
  const [n, a, b, c] = shape;
  return layout === 'nhwc' ? [n, c, a, b] : [n, a, b, c];
}

function checkTensor(x: Tensor, role: string, device: string, dtypes: readonly string[]): Operand & { value: NativeTensorHandle } {
  const handle = Tensor.handle(x);
  if (handle.device !== device) {
    throw new PerceptualLossError(
      'ERR_DEVICE',
      `${role} is on ${handle.device} but the loss runs on ${device}; create it with Tensor.from(data, shape, { device: '${device}' }).`,
    );
  }
  if (!dtypes.includes(handle.dtype)) {
    throw new PerceptualLossError('ERR_DTYPE', `${role} is ${withArticle(handle.dtype)} Tensor; expected ${dtypes.join(' or ')}.`);
  }
  return { value: handle, shape: handle.shape, tensor: true };
}

const channels = (n: number) => `${n} channel${n === 1 ? '' : 's'}`;

/**
 * Where a 3-D shape is one image without its batch axis: the shape to pass, and for pixels as
 * image decoders give them ([H, W, C]) the layout.
 */
function batchHint(dims: readonly number[], check: ImageCheck): string {
  if (dims.length !== 3) return '';
  const hint = ` For one image, add the batch axis: shape ${show([1, ...dims])}.`;
  if (check.layout === 'nchw' && dims[0] !== check.inChannels && dims[2] === check.inChannels) {
    return `${hint} Pixels as image decoders give them (sharp's raw output, a canvas's getImageData) are [H, W, C]: pass [1, H, W, C] with layout: 'nhwc'.`;
  }
  return hint;
}

/** Where the channel count sits on the other axis: the layout the data has; RGBA for RGB. */
function channelHint(dims: readonly number[], c: number, check: ImageCheck): string {
  const { layout, inChannels } = check;
  const second = dims[1];
  const last = dims[3];
  const rgba = inChannels === 3 && ' RGBA pixels (a canvas\'s getImageData, sharp with an alpha channel) need their alpha dropped (sharp: .removeAlpha()).';
  if (layout === 'nchw' && second !== inChannels && (last === inChannels || (rgba && last === 4))) {
    return (
      ` The last axis has ${last}: for data laid out [N, H, W, C] (TensorFlow.js tensors, pixels as sharp or a canvas decode them)` +
      ` pass layout: 'nhwc', to the constructor or to this call.${last === 4 && rgba ? rgba : ''}`
    );
  }
  if (layout === 'nhwc' && last !== inChannels && second === inChannels) {
    return ` The second axis has ${inChannels}: for data laid out [N, C, H, W] pass layout: 'nchw'.`;
  }
  return c === 4 && rgba ? rgba : '';
}

/** Where an input is too small for the deepest tap: the taps that fit, or a network with fewer pools. */
function sizeHint(h: number, w: number, check: ImageCheck): string {
  const taps = check.tapsWithin?.(Math.min(h, w)) ?? [];
  const shallower = taps.length > 0 ? `shallower taps (at ${h}x${w}: layers: [${taps.map((t) => `'${t}'`).join(', ')}], ${taps[taps.length - 1]} the deepest that fits), ` : '';
  return ` Use ${shallower}an arch with fewer pools (each 'M' halves H and W), or a larger input.`;
}

/** @internal [N, C, H, W] in the call's layout, checked against inChannels and the deepest tap. */
export function readImage(x: unknown, role: string, check: ImageCheck): Operand {
  const operand =
    x instanceof Tensor
      ? checkTensor(x as Tensor, role, check.device, ['float32', 'float64'])
      : host(x, role, [Float32Array, Float64Array]);
  const dims = operand.shape;
  const order = check.layout === 'nhwc' ? '[N, H, W, C]' : '[N, C, H, W]';
  if (dims.length !== 4) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role} must be 4-D ${order} (layout '${check.layout}'); got shape ${show(dims)}.${batchHint(dims, check)}`,
    );
  }
  const [n, c, h, w] = nchwDims(dims, check.layout);
  if (n === 0 || c === 0 || h === 0 || w === 0) {
    throw new PerceptualLossError('ERR_SHAPE', `${role} is empty: shape ${show(dims)} ${order}.`);
  }
  if (c !== check.inChannels) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role} has ${channels(c)} (shape ${show(dims)}, ${order}) but the loss was built with inChannels: ${check.inChannels}.${channelHint(dims, c, check)}`,
    );
  }
  if (h < check.minSize || w < check.minSize) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role} is ${h}x${w} but the deepest tap needs H and W of at least ${check.minSize} (minimum size ${check.minSize}x${check.minSize}).${sizeHint(h, w, check)}`,
    );
  }
  return operand;
}

export function sameShape(a: readonly number[], b: readonly number[], what: string): void {
  if (a.length !== b.length || a.some((d, i) => d !== b[i])) {
    throw new PerceptualLossError('ERR_SHAPE', `${what}: shapes differ, ${show(a)} and ${show(b)}.`);
  }
}

/** @internal Labels [N, H, W] matching the logits' N, H and W. */
export function readLabels(x: unknown, logits: Operand, check: ImageCheck): Operand {
  const operand =
    x instanceof Tensor
      ? checkTensor(x as Tensor, 'labels', check.device, ['int32', 'uint8'])
      : host(x, 'labels', [Int32Array, Uint8Array]);
  const [n, , h, w] = nchwDims(logits.shape, check.layout);
  sameShape(operand.shape, [n, h, w], 'labels must be [N, H, W] of the logits');
  return operand;
}

const MASK_ARRAYS = [Uint8Array, Float32Array, Float64Array];
const MASK_DTYPES = ['uint8', 'float32', 'float64'];

/** @internal A mask for pred of `shape`: one value per pixel or per element, shaped to broadcast over pred. */
export function readMask(mask: MaskLike, shape: readonly number[], layout: Layout, device: string): MaskOperand {
  let value: MaskOperand['value'];
  let given: number[] | undefined;
  let length: number;
  if (mask instanceof Tensor) {
    ({ value, shape: given } = checkTensor(mask, 'mask', device, MASK_DTYPES));
    length = elementCount(given);
  } else {
    const isArray = MASK_ARRAYS.some((type) => mask instanceof type);
    const data = isArray ? mask : (mask as { data?: unknown } | null)?.data;
    if (!MASK_ARRAYS.some((type) => data instanceof type)) {
      throw new PerceptualLossError(
        'ERR_DTYPE',
        `mask must be a Uint8Array, Float32Array or Float64Array, { data, shape } of one, or a Tensor; got ${show(mask)}.`,
      );
    }
    value = data as Uint8Array | Float32Array | Float64Array;
    length = value.length;
    if (!isArray) {
      const raw = (mask as { shape?: unknown }).shape;
      if (!Array.isArray(raw)) throw new PerceptualLossError('ERR_SHAPE', `mask.shape must be an array; got ${show(raw)}.`);
      // Its entries are checked against the operand's shape below.
      given = [...(raw as number[])];
    }
  }
  const [n, c, h, w] = nchwDims(shape, layout);
  const pixels = n * h * w;
  const elements = pixels * c;
  const full = [...shape];
  const broadcast = layout === 'nhwc' ? [n, h, w, 1] : [n, 1, h, w];
  const perPixel = [[n, h, w], broadcast];
  const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
  if (given !== undefined && !perPixel.some((s) => same(given, s)) && !same(given, full)) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `mask shape ${show(given)} must be [N, H, W] = ${show(perPixel[0])}, ${layout === 'nhwc' ? '[N, H, W, 1]' : '[N, 1, H, W]'} = ${show(broadcast)} or pred's shape ${show(full)}.`,
    );
  }
  if (length === elements && (given === undefined || same(given, full))) return { value, shape: full };
  if (length === pixels) return { value, shape: broadcast };
  throw new PerceptualLossError(
    'ERR_SHAPE',
    `mask holds ${length} values; expected ${pixels} (one per pixel, [N, H, W]) or ${elements} (one per element of pred ${show(full)}).`,
  );
}
