export const ERROR_CODES = [
  'ERR_OPTIONS',
  'ERR_SHAPE',
  'ERR_DTYPE',
  'ERR_DEVICE',
  'ERR_DISPOSED',
  'ERR_FOREIGN_OBJECT',
  'ERR_NONFINITE',
  'ERR_OUT_OF_MEMORY',
  'ERR_FILE',
  'ERR_LIBTORCH',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** Every failure of this package, from TS validation or from native code, is one of these. */
export class PerceptualLossError extends Error {
  override readonly name = 'PerceptualLossError';

  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * `word` with its indefinite article, by how the word is read: an Int32Array, an int32 tensor, an
 * Object, but a Uint8Array ("you-int"), a URL, a Float32Array.
 */
export function withArticle(word: string): string {
  const an = /^[aeio]/i.test(word) || /^u(?!int|ni|rl|s[aeu])/i.test(word);
  return `${an ? 'an' : 'a'} ${word}`;
}

/** How a value reads in an error message. */
export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (ArrayBuffer.isView(value)) return `${withArticle(value.constructor.name)} of length ${(value as Float32Array).length ?? value.byteLength}`;
  if (Array.isArray(value)) return value.length > 8 ? `an array of length ${value.length}` : `[${value.map(show).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    const name = value.constructor?.name;
    if (name && name !== 'Object') return withArticle(name);
    try {
      const text = JSON.stringify(value);
      return text.length > 80 ? `${text.slice(0, 77)}...` : text;
    } catch {
      return 'an object';
    }
  }
  return String(value);
}
