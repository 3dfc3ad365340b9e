// A target whose features were computed once by a loss, held by that loss's native handle.
import type { NativeTargetHandle } from './binding';
import { PerceptualLossError } from './errors';
import type { Layout } from './options';
import './disposable';

const targets = new WeakMap<PreparedTarget, { handle: NativeTargetHandle; owner: object }>();

/** @internal */
export function targetOf(target: PreparedTarget): { handle: NativeTargetHandle; owner: object } {
  const entry = targets.get(target);
  if (!entry) throw new PerceptualLossError('ERR_FOREIGN_OBJECT', 'not a prepared target of this package (make one with loss.prepareTarget()).');
  return entry;
}

/** A target whose features were computed once; pass it as `target` again and again. */
export class PreparedTarget {
  /** @internal */
  constructor(
    handle: NativeTargetHandle,
    /** The loss that made it: a target serves only its own loss. */
    owner: object,
    readonly layout: Layout,
  ) {
    targets.set(this, { handle, owner });
  }

  /** The shape of the target it was prepared from, in its layout. */
  get shape(): number[] {
    return targetOf(this).handle.shape;
  }

  get disposed(): boolean {
    return targetOf(this).handle.disposed;
  }

  dispose(): void {
    targetOf(this).handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
