import { loadBinding } from './binding';

export { PerceptualLossError, type ErrorCode } from './errors';
export {
  PerceptualLoss,
  PreparedTarget,
  type CallOptions,
  type Feature,
  type InstanceMaskCallOptions,
  type LossAndGrad,
  type LossCallOptions,
  type LossTerm,
  type LossValue,
  type SegmentationOptions,
} from './loss';
export type { HostTensor, InstanceMasksLike, LabelsLike, PerSampleFor, ResultFor, TensorLike } from './input';
export type {
  ArchName,
  ArchSpec,
  Criterion,
  Device,
  DeviceSpec,
  Dtype,
  InitScheme,
  Layout,
  PerceptualLossOptions,
  PerformanceOptions,
  PoolKind,
  Reduction,
  ResolvedOptions,
  SpatialDims,
} from './options';
export type { OpenMPInfo } from './openmp';
export { runtime, setNumThreads, type RuntimeInfo } from './runtime';
export {
  denseLoss,
  depthLoss,
  depthValidMask,
  instanceMaskLoss,
  segmentationLoss,
  DenseLoss,
  InstanceMaskLoss,
  SegmentationLoss,
  type DenseCallOptions,
  type DenseLossOptions,
  type InstanceMaskLossOptions,
  type MaskLike,
  type SegmentationLossOptions,
  type TaskLossOptions,
} from './tasks';
export type { InstanceWeights } from './validate';
export { Tensor, type DtypeOf, type TensorArrayTypes, type TensorData, type TensorDtype, type TensorOptions } from './tensor';

// Fail at require time, with the whole story, rather than at the first call.
loadBinding();
