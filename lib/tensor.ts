// Tensors resident in libtorch memory, on a device.
import { deviceInfo, native, type NativeTensorHandle } from './binding';
import { PerceptualLossError, show } from './errors';
import { resolveDevice, type Device, type DeviceSpec } from './options';
import { checkObject, checkShape, elementCount } from './validate';
import './disposable';

export type TensorData = Float32Array | Float64Array | Int32Array | Uint8Array;

/** The element type of a Tensor. */
export type TensorDtype = 'float32' | 'float64' | 'int32' | 'uint8';

/** The host array of each dtype: what `toArray()` gives. */
export interface TensorArrayTypes {
  float32: Float32Array;
  float64: Float64Array;
  int32: Int32Array;
  uint8: Uint8Array;
}

/** The dtype of a Tensor made from an array of type A. */
export type DtypeOf<A extends TensorData> = A extends Float32Array
  ? 'float32'
  : A extends Float64Array
    ? 'float64'
    : A extends Int32Array
      ? 'int32'
      : A extends Uint8Array
        ? 'uint8'
        : TensorDtype;

export interface TensorOptions {
  /** Default 'auto': the first CUDA device if there is one, else the CPU (as the loss). */
  device?: DeviceSpec;
}

const handles = new WeakMap<Tensor, NativeTensorHandle>();

/**
 * A tensor in libtorch memory. `D`, its dtype, is known where the tensor was made from a typed
 * array (`Tensor.from(Float32Array, ...)` is a `Tensor<'float32'>`) or derived from such a tensor
 * (a gradient or features of a `Tensor<'float32'>` pred); a plain `Tensor` may have any dtype.
 */
export class Tensor<D extends TensorDtype = TensorDtype> {
  private constructor(handle: NativeTensorHandle) {
    handles.set(this, handle);
  }

  /** Copies `data` (row-major, `shape`) into a new tensor on the device. */
  static from<A extends TensorData>(data: A, shape: readonly number[], options: TensorOptions = {}): Tensor<DtypeOf<A>> {
    const types = [Float32Array, Float64Array, Int32Array, Uint8Array];
    if (!types.some((type) => data instanceof type)) {
      throw new PerceptualLossError(
        'ERR_DTYPE',
        `Tensor.from takes a Float32Array or Float64Array (or an Int32Array / Uint8Array of labels); got ${show(data)}.`,
      );
    }
    const dims = checkShape(shape, 'Tensor.from');
    if (elementCount(dims) !== data.length) {
      throw new PerceptualLossError(
        'ERR_SHAPE',
        `Tensor.from: shape ${show(dims)} needs ${elementCount(dims)} elements but the data holds ${data.length}.`,
      );
    }
    checkObject(options, 'Tensor.from options');
    const { cudaDeviceCount, cudaBuild } = deviceInfo();
    const device = resolveDevice(options.device, cudaDeviceCount, cudaBuild);
    return new Tensor(native().NativeTensor.fromHost(data, dims, device));
  }

  /** @internal */
  static wrap(handle: NativeTensorHandle): Tensor {
    return new Tensor(handle);
  }

  /** @internal The native handle; throws ERR_DISPOSED after dispose(). */
  static handle(tensor: Tensor): NativeTensorHandle {
    const handle = handles.get(tensor);
    if (!handle) throw new PerceptualLossError('ERR_FOREIGN_OBJECT', 'not a Tensor of this package (make one with Tensor.from())');
    if (handle.disposed) throw new PerceptualLossError('ERR_DISPOSED', 'This Tensor has been disposed.');
    return handle;
  }

  get shape(): number[] {
    return Tensor.handle(this).shape;
  }

  get device(): Device {
    return Tensor.handle(this).device;
  }

  get dtype(): D {
    return Tensor.handle(this).dtype as D;
  }

  get disposed(): boolean {
    const handle = handles.get(this);
    if (!handle) throw new PerceptualLossError('ERR_FOREIGN_OBJECT', 'not a Tensor of this package (make one with Tensor.from())');
    return handle.disposed;
  }

  /** Copies the data to the host, as the array type of its dtype. */
  toArray(): TensorArrayTypes[D] {
    return Tensor.handle(this).toArray() as TensorArrayTypes[D];
  }

  /** Frees the memory now; the garbage collector would free it later. Safe to call twice. */
  dispose(): void {
    const handle = handles.get(this);
    if (!handle) throw new PerceptualLossError('ERR_FOREIGN_OBJECT', 'not a Tensor of this package (make one with Tensor.from())');
    handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
