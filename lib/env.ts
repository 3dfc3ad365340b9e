// Environment settings are named PL_*. Their old names, GPL_*, read as a licence name; they still
// work for one release, with a deprecation warning.

const warned = new Set<string>();

/** The name a PL_ setting had before. */
export function legacyName(name: string): string {
  return `G${name}`;
}

/**
 * The setting `name` (PL_...) from `env`, or else its old GPL_ name, with a DeprecationWarning
 * once per process and old name; undefined when neither is set.
 */
export function readEnv(name: string, env: Record<string, string | undefined> = process.env): string | undefined {
  const value = env[name];
  if (value !== undefined || !name.startsWith('PL_')) return value;
  const old = legacyName(name);
  const legacy = env[old];
  if (legacy !== undefined && !warned.has(old)) {
    warned.add(old);
    process.emitWarning(`${old} is deprecated and will be removed in the next release; set ${name} instead.`, {
      type: 'DeprecationWarning',
      code: 'PL_DEPRECATED_ENV',
    });
  }
  return legacy;
}
