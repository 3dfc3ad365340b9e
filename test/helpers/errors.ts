// Shared pieces of the error tests (test/errors/): a loss with fixed inputs and the result it gave
// before any error was provoked, and the checks of one error (a PerceptualLossError with the right
// code and a message that says what was wrong, after which that loss still gives its first result).
import { expect } from 'vitest';
import {
  PerceptualLoss,
  PerceptualLossError,
  setNumThreads,
  type ErrorCode,
  type HostTensor,
  type PerceptualLossOptions,
} from '../../lib/index';
import { randn } from './random';

/** A loss with fixed inputs and the result it gave before any error was provoked. */
export interface Subject {
  loss: PerceptualLoss;
  pred: HostTensor<Float32Array>;
  target: HostTensor<Float32Array>;
  /** Fails unless the loss still gives bit for bit the loss and gradient it gave at first. */
  expectUnchanged(): void;
}

export function host(shape: number[], seed: number): HostTensor<Float32Array> {
  return { data: randn(shape.reduce((a, b) => a * b, 1), seed), shape };
}

export function subject(options: PerceptualLossOptions, shape: number[]): Subject {
  const loss = new PerceptualLoss(options);
  const pred = host(shape, 11);
  const target = host(shape, 12);
  const before = loss.lossAndGrad(pred, target);
  expect(Number.isFinite(before.loss as number)).toBe(true);
  return {
    loss,
    pred,
    target,
    expectUnchanged() {
      const now = loss.lossAndGrad(pred, target);
      expect(now.loss).toBe(before.loss);
      expect(now.grad).toEqual(before.grad);
    },
  };
}

/**
 * Runs `fn`, expects a PerceptualLossError with `code` whose message contains every one of
 * `mentions`, then expects `after` to still give its first result.
 */
export function expectError(after: Subject, fn: () => unknown, code: ErrorCode, mentions: Array<string | RegExp> = []): PerceptualLossError {
  let thrown: unknown;
  let threw = false;
  try {
    fn();
  } catch (error) {
    threw = true;
    thrown = error;
  }
  expect(threw, `expected ${code} to be thrown`).toBe(true);
  expect(thrown).toBeInstanceOf(PerceptualLossError);
  expect(thrown).toBeInstanceOf(Error);
  const error = thrown as PerceptualLossError;
  expect(error.name).toBe('PerceptualLossError');
  expect(error.code, error.message).toBe(code);
  for (const m of mentions) {
    if (typeof m === 'string') expect(error.message).toContain(m);
    else expect(error.message).toMatch(m);
  }
  after.expectUnchanged();
  return error;
}

/** As expectError, for an async method: it must return a Promise that rejects, not throw. */
export async function expectRejection(
  after: Subject,
  fn: () => Promise<unknown>,
  code: ErrorCode,
  mentions: Array<string | RegExp> = [],
): Promise<void> {
  let promise: Promise<unknown> | undefined;
  expect(() => {
    promise = fn();
  }, 'an async method must reject, not throw synchronously').not.toThrow();
  expect(promise).toBeInstanceOf(Promise);
  let rejected = false;
  let reason: unknown;
  try {
    await promise;
  } catch (error) {
    rejected = true;
    reason = error;
  }
  expect(rejected, `expected a rejection with ${code}`).toBe(true);
  expectError(after, () => {
    throw reason;
  }, code, mentions);
}

export const SHAPE = [2, 3, 16, 16];
export const SMALL: PerceptualLossOptions = { inChannels: 3, arch: [8, 'M', 16] };

export const construct = (options: unknown) => () => new PerceptualLoss(options as PerceptualLossOptions);

/**
 * The file-level set-up of an error test: one intra-op thread (tiny tensors: it avoids thread
 * hand-offs that are slow on a busy CI machine), then the subject of SMALL on SHAPE.
 */
export function smallSubject(): Subject {
  setNumThreads(1);
  return subject(SMALL, SHAPE);
}
