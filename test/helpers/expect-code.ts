import { expect } from 'vitest';
import { PerceptualLossError, type ErrorCode } from '../../lib/index';

/** `fn` must throw a PerceptualLossError with `code` (and a message matching `message`, if given). */
export function expectCode(fn: () => unknown, code: ErrorCode, message?: RegExp): void {
  try {
    fn();
    expect.unreachable();
  } catch (error) {
    expect(error).toBeInstanceOf(PerceptualLossError);
    expect((error as PerceptualLossError).code).toBe(code);
    if (message) expect((error as Error).message).toMatch(message);
  }
}
