// Reads the tensor-like arguments (images, labels, masks) and checks them against the network
// before they reach native code.
import type { NativeTargetHandle, NativeTensorHandle } from './binding';
import { PerceptualLossError, show, withArticle } from './errors';
import { channelsLast, layoutsOf, type Layout, type SpatialDims } from './options';
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

/** Integer class ids [N, H, W] ([N, D, H, W] for volumes): a host value or an int32 / uint8 Tensor. */
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
 * element in pred's shape and layout; for volumes one per voxel, [N, D, H, W] or [N, 1, D, H, W]
 * ([N, D, H, W, 1] in 'ndhwc'), or one per element. A typed array alone is read by its length. A
 * Tensor mask is uint8, float32 or float64, on the loss's device.
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

/**
 * Binary ground-truth masks, one per instance, in the shape of the mask logits: 0/1 floats or
 * bytes, as a host value or a uint8, float32 or float64 Tensor on the loss's device.
 */
export type InstanceMasksLike = Tensor | { data: Uint8Array | Float32Array | Float64Array; shape: readonly number[] };

/** @internal */
export interface ImageCheck {
  layout: Layout;
  spatialDims: SpatialDims;
  inChannels: number;
  /** The smallest size of each spatial axis. */
  minSize: number;
  device: string;
  /** The taps in use that an input whose smallest spatial side is `size` reaches (for the message of a too-small input). */
  tapsWithin?: (size: number) => string[];
  /** Instance masks: the batch axis is M, one 1-channel mask per instance. */
  instances?: boolean;
}

function host(x: unknown, role: string, types: Array<new (n: number) => ArrayBufferView>): Operand {
  const { data, shape } = hostTensor<Float32Array | Float64Array | Int32Array | Uint8Array>(x, role, types);
  return { value: data, shape, tensor: false };
}

/** A shape given in `layout`, channels first: [N, C, H, W] or [N, C, D, H, W]. */
export function channelsFirst(shape: readonly number[], layout: Layout): number[] {
  if (!channelsLast(layout)) return [...shape];
  return [shape[0], shape[shape.length - 1], ...shape.slice(1, -1)];
}

/** The names of the spatial axes. */
const spatialNames = (spatialDims: SpatialDims) => (spatialDims === 3 ? ['D', 'H', 'W'] : ['H', 'W']);

/** The axes of `layout` as messages name them: '[N, C, H, W]', '[N, D, H, W, C]', ... */
export function axesOf(layout: Layout, batch = 'N', channel = 'C'): string {
  // A layout's name has one letter per axis: N, C and the spatial ones.
  const spatial = spatialNames(layout.length === 5 ? 3 : 2);
  return `[${(channelsLast(layout) ? [batch, ...spatial, channel] : [batch, channel, ...spatial]).join(', ')}]`;
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
 * Where a shape lacks an axis: one image or volume without its batch axis (the shape to pass, and
 * for pixels as image decoders give them, [H, W, C], the layout), or, for a volume loss, a batch
 * of images. Where it has one axis too many for an image loss: a batch of volumes.
 */
function rankHint(dims: readonly number[], check: ImageCheck): string {
  const rank = check.spatialDims + 2;
  if (dims.length === rank + 1 && check.spatialDims === 2) {
    return " A 5-D shape is a batch of volumes: build the loss with spatialDims: 3 (layouts 'ncdhw' [N, C, D, H, W] and 'ndhwc' [N, D, H, W, C]).";
  }
  if (dims.length !== rank - 1) return '';
  const one = check.spatialDims === 3 ? 'volume' : 'image';
  const hint = ` For one ${one}, add the batch axis: shape ${show([1, ...dims])}.`;
  if (check.spatialDims === 3) {
    return `${hint} A 4-D shape [N, C, H, W] is a batch of 2-D images, for a loss with spatialDims: 2 (the default); this one has spatialDims: 3.`;
  }
  if (check.layout === 'nchw' && dims[0] !== check.inChannels && dims[2] === check.inChannels) {
    return `${hint} Pixels as image decoders give them (sharp's raw output, a canvas's getImageData) are [H, W, C]: pass [1, H, W, C] with layout: 'nhwc'.`;
  }
  return hint;
}

/** Where the channel count sits on the other axis: the layout the data has; RGBA for RGB. */
function channelHint(dims: readonly number[], c: number, check: ImageCheck): string {
  const { layout, inChannels, spatialDims } = check;
  const second = dims[1];
  const last = dims[dims.length - 1];
  const [first, other] = layoutsOf(spatialDims);
  const rgba =
    spatialDims === 2 && inChannels === 3 && ' RGBA pixels (a canvas\'s getImageData, sharp with an alpha channel) need their alpha dropped (sharp: .removeAlpha()).';
  if (!channelsLast(layout) && second !== inChannels && (last === inChannels || (rgba && last === 4))) {
    const laidOut = spatialDims === 2 ? ' (TensorFlow.js tensors, pixels as sharp or a canvas decode them)' : ' (TensorFlow.js tensors)';
    return (
      ` The last axis has ${last}: for data laid out ${axesOf(other)}${laidOut}` +
      ` pass layout: '${other}', to the constructor or to this call.${last === 4 && rgba ? rgba : ''}`
    );
  }
  if (channelsLast(layout) && last !== inChannels && second === inChannels) {
    return ` The second axis has ${inChannels}: for data laid out ${axesOf(first)} pass layout: '${first}'.`;
  }
  return c === 4 && rgba ? rgba : '';
}

/** Where an input is too small for the deepest tap: the taps that fit, or a network with fewer pools. */
function sizeHint(spatial: readonly number[], check: ImageCheck): string {
  const taps = check.tapsWithin?.(Math.min(...spatial)) ?? [];
  const at = spatial.join('x');
  const shallower = taps.length > 0 ? `shallower taps (at ${at}: layers: [${taps.map((t) => `'${t}'`).join(', ')}], ${taps[taps.length - 1]} the deepest that fits), ` : '';
  const halves = check.spatialDims === 3 ? 'D, H and W' : 'H and W';
  return ` Use ${shallower}an arch with fewer pools (each 'M' halves ${halves}), or a larger input.`;
}

/** The message of an input smaller than the deepest tap needs, naming the minimum of each axis. */
function tooSmall(role: string, spatial: readonly number[], check: ImageCheck): string {
  const min = check.minSize;
  if (check.spatialDims === 2) {
    const [h, w] = spatial;
    return `${role} is ${h}x${w} but the deepest tap needs H and W of at least ${min} (minimum size ${min}x${min}).${sizeHint(spatial, check)}`;
  }
  const names = spatialNames(3);
  const short = spatial.map((v, i) => `${names[i]}=${v}`).filter((_, i) => spatial[i] < min);
  return (
    `${role} is ${spatial.join('x')} (D x H x W) but the deepest tap needs D, H and W of at least ${min} each ` +
    `(minimum size ${min}x${min}x${min}); got ${short.join(', ')}.${sizeHint(spatial, check)}`
  );
}

/**
 * @internal [N, C, H, W] or [N, C, D, H, W] in the call's layout, checked against spatialDims,
 * inChannels and the deepest tap.
 */
export function readImage(x: unknown, role: string, check: ImageCheck): Operand {
  const operand =
    x instanceof Tensor
      ? checkTensor(x as Tensor, role, check.device, ['float32', 'float64'])
      : host(x, role, [Float32Array, Float64Array]);
  const dims = operand.shape;
  const rank = check.spatialDims + 2;
  const batch = check.instances ? 'M' : 'N';
  const order = axesOf(check.layout, batch);
  if (dims.length !== rank) {
    const which = check.spatialDims === 3 ? `layout '${check.layout}', spatialDims: 3` : `layout '${check.layout}'`;
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `${role} must be ${rank}-D ${check.instances ? axesOf(check.layout, batch, '1') : order} (${which}); got shape ${show(dims)}.${rankHint(dims, check)}`,
    );
  }
  const [, c, ...spatial] = channelsFirst(dims, check.layout);
  if (dims.includes(0)) {
    throw new PerceptualLossError('ERR_SHAPE', `${role} is empty: shape ${show(dims)} ${order}.`);
  }
  if (c !== check.inChannels) {
    const want = check.instances
      ? `instance masks have 1 channel: ${axesOf(check.layout, batch, '1')}, one mask per instance`
      : `the loss was built with inChannels: ${check.inChannels}`;
    throw new PerceptualLossError('ERR_SHAPE', `${role} has ${channels(c)} (shape ${show(dims)}, ${order}) but ${want}.${channelHint(dims, c, check)}`);
  }
  if (spatial.some((side) => side < check.minSize)) throw new PerceptualLossError('ERR_SHAPE', tooSmall(role, spatial, check));
  return operand;
}

export function sameShape(a: readonly number[], b: readonly number[], what: string): void {
  if (a.length !== b.length || a.some((d, i) => d !== b[i])) {
    throw new PerceptualLossError('ERR_SHAPE', `${what}: shapes differ, ${show(a)} and ${show(b)}.`);
  }
}

/** @internal Labels [N, H, W] ([N, D, H, W]) matching the logits' N and spatial axes. */
export function readLabels(x: unknown, logits: Operand, check: ImageCheck): Operand {
  const operand =
    x instanceof Tensor
      ? checkTensor(x as Tensor, 'labels', check.device, ['int32', 'uint8'])
      : host(x, 'labels', [Int32Array, Uint8Array]);
  const [n, , ...spatial] = channelsFirst(logits.shape, check.layout);
  sameShape(operand.shape, [n, ...spatial], `labels must be [${['N', ...spatialNames(check.spatialDims)].join(', ')}] of the logits`);
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
  const [n, c, ...spatial] = channelsFirst(shape, layout);
  const pixels = n * elementCount(spatial);
  const elements = pixels * c;
  const full = [...shape];
  const broadcast = channelsLast(layout) ? [n, ...spatial, 1] : [n, 1, ...spatial];
  const perPixel = [[n, ...spatial], broadcast];
  const axes = spatialNames(spatial.length === 3 ? 3 : 2);
  const pixelAxes = `[${['N', ...axes].join(', ')}]`;
  const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
  if (given !== undefined && !perPixel.some((s) => same(given, s)) && !same(given, full)) {
    throw new PerceptualLossError(
      'ERR_SHAPE',
      `mask shape ${show(given)} must be ${pixelAxes} = ${show(perPixel[0])}, ${axesOf(layout, 'N', '1')} = ${show(broadcast)} or pred's shape ${show(full)}.`,
    );
  }
  if (length === elements && (given === undefined || same(given, full))) return { value, shape: full };
  if (length === pixels && (given === undefined || perPixel.some((s) => same(given, s)))) return { value, shape: broadcast };
  const expected = `${pixels} (one per ${axes.length === 3 ? 'voxel' : 'pixel'}, ${pixelAxes}) or ${elements} (one per element of pred ${show(full)})`;
  if (given !== undefined) {
    throw new PerceptualLossError('ERR_SHAPE', `mask shape ${show(given)} needs ${elementCount(given)} values, but its data holds ${length}; a mask holds ${expected}.`);
  }
  throw new PerceptualLossError('ERR_SHAPE', `mask holds ${length} values; expected ${expected}.`);
}

/**
 * @internal Instance masks in the shape of the mask logits: uint8, float32 or float64. A host
 * value's entries must lie in [0, 1] (masks stored as 0/255 are the usual slip); a Tensor's are
 * not read back from its device. NaN is left to checkFinite.
 */
export function readInstanceMasks(x: unknown, logits: Operand, device: string): Operand {
  const operand = x instanceof Tensor ? checkTensor(x as Tensor, 'masks', device, MASK_DTYPES) : host(x, 'masks', MASK_ARRAYS);
  sameShape(operand.shape, logits.shape, 'masks must have the shape of maskLogits');
  if (!operand.tensor) {
    const data = operand.value as Uint8Array | Float32Array | Float64Array;
    for (let i = 0; i < data.length; i++) {
      if (data[i] < 0 || data[i] > 1) {
        const bytes = data instanceof Uint8Array ? ' (masks stored as 0 and 255: divide by 255, or compare with 0)' : '';
        throw new PerceptualLossError('ERR_SHAPE', `masks must hold 0 and 1 (values in [0, 1]); masks.data[${i}] is ${data[i]}${bytes}.`);
      }
    }
  }
  return operand;
}
