import { loadBinding } from './binding';

export { PerceptualLossError, type ErrorCode } from './errors';
export { PerceptualLoss, PreparedTarget, type CallOptions, type Feature, type LossAndGrad, type LossTerm, type SegmentationOptions } from './loss';
export type { HostTensor, LabelsLike, ResultFor, TensorLike } from './input';
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
} from './options';
export { runtime, setNumThreads, type RuntimeInfo } from './runtime';
export {
  denseLoss,
  depthLoss,
  depthValidMask,
  segmentationLoss,
  DenseLoss,
  SegmentationLoss,
  type DenseCallOptions,
  type DenseLossOptions,
  type MaskLike,
  type SegmentationLossOptions,
  type TaskLossOptions,
} from './tasks';
export { Tensor, type TensorData, type TensorOptions } from './tensor';

// Fail at require time, with the whole story, rather than at the first call.
loadBinding();
