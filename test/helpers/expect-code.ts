import { expect } from 'vitest';
import { PerceptualLossError } from '../../lib/index';

/** `fn` must throw a PerceptualLossError with `code` and a message matching `message`. */
export function expectCode(fn: () => unknown, code: string, message: RegExp): void {
  try {
    fn();
    expect.unreachable();
  } catch (error) {
    expect(error).toBeInstanceOf(PerceptualLossError);
    expect((error as PerceptualLossError).code).toBe(code);
    expect((error as Error).message).toMatch(message);
  }
}
