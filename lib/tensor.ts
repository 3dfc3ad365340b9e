// Tensors resident in libtorch memory, on a device.
import { deviceInfo, native, type NativeTensorHandle } from './binding';
import { PerceptualLossError, show } from './errors';
import { resolveDevice, type Device, type DeviceSpec } from './options';
import { checkObject, checkShape, elementCount } from './validate';

export type TensorData = Float32Array | Float64Array | Int32Array | Uint8Array;

export interface TensorOptions {
  /** Default 'auto': the first CUDA device if there is one, else the CPU (as the loss). */
  device?: DeviceSpec;
}

const handles = new WeakMap<Tensor, NativeTensorHandle>();

export class Tensor implements Disposable {
  private constructor(handle: NativeTensorHandle) {
    handles.set(this, handle);
  }

  /** Copies `data` (row-major, `shape`) into a new tensor on the device. */
  static from(data: TensorData, shape: readonly number[], options: TensorOptions = {}): Tensor {
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
    const device = resolveDevice(options.device, deviceInfo().cudaDeviceCount);
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

  get dtype(): string {
    return Tensor.handle(this).dtype;
  }

  get disposed(): boolean {
    const handle = handles.get(this);
    if (!handle) throw new PerceptualLossError('ERR_FOREIGN_OBJECT', 'not a Tensor of this package (make one with Tensor.from())');
    return handle.disposed;
  }

  /** Copies the data to the host. */
  toArray(): TensorData {
    return Tensor.handle(this).toArray();
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
