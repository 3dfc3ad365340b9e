// Hostile files: PerceptualLoss.load reads safetensors defensively. Valid files are
// mutated at random (bytes, the header length, the JSON header, offsets, shapes, dtypes, names,
// truncation, appended bytes); an independent strict reader of the format decides whether each
// mutant is still a valid file for the architecture. Every invalid one must give ERR_FILE; every
// valid one must load bit for bit (its weights are exactly the file's bytes).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, setNumThreads, type PerceptualLossOptions } from '../../lib/index';
import { expectSameBits, expectThrowsCode, fuzzParams, RUNS_SCALE } from '../helpers/fuzz';
import { mulberry32 } from '../helpers/random';
import { assemble, BASES, split, writeBases, type Base } from '../helpers/safetensors-bases';

let dir: string;
const bases: Base[] = [];

beforeAll(() => {
  setNumThreads(1);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-files-mutations-'));
  bases.push(...writeBases(dir));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

let casesRun = 0;

// ------------------------------------------------------------------ an independent reader

interface Parsed {
  tensors: Map<string, { shape: number[]; bytes: Buffer }>;
  metadata?: Record<string, string>;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * The safetensors format, strictly: u64 little-endian header length N <= file size - 8; N bytes of
 * a JSON object; each tensor {dtype: 'F32', shape: integers >= 0, data_offsets: [begin, end]} with
 * 4 * prod(shape) = end - begin (exact, in BigInt); the spans tile the data with no hole or
 * overlap; optional __metadata__ of string values. undefined: not a valid file.
 */
function parseStrict(bytes: Buffer): Parsed | undefined {
  if (bytes.length < 8) return undefined;
  const n = bytes.readBigUInt64LE(0);
  if (n > BigInt(bytes.length - 8)) return undefined;
  const start = 8 + Number(n);
  let header: unknown;
  try {
    header = JSON.parse(bytes.subarray(8, start).toString('utf8'));
  } catch {
    return undefined;
  }
  if (!isObject(header)) return undefined;
  const data = bytes.subarray(start);
  const parsed: Parsed = { tensors: new Map() };
  const spans: Array<[number, number]> = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(entry) || !Object.values(entry).every((v) => typeof v === 'string')) return undefined;
      parsed.metadata = entry as Record<string, string>;
      continue;
    }
    if (!isObject(entry) || entry.dtype !== 'F32') return undefined;
    const { shape, data_offsets: offsets } = entry;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return undefined;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) return undefined;
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > data.length) return undefined;
    const size = (shape as number[]).reduce((p, d) => p * BigInt(d), 4n);
    if (size !== BigInt(end - begin)) return undefined;
    spans.push([begin, end]);
    parsed.tensors.set(name, { shape: shape as number[], bytes: data.subarray(begin, end) });
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let covered = 0;
  for (const [begin, end] of spans) {
    if (begin !== covered) return undefined;
    covered = end;
  }
  if (covered !== data.length) return undefined;
  return parsed;
}

/** Whether a parsed file holds exactly the architecture's tensors (names and shapes). */
function matches(base: Base, parsed: Parsed): boolean {
  if (parsed.tensors.size !== base.shapes.size) return false;
  for (const [name, shape] of base.shapes) {
    const t = parsed.tensors.get(name);
    if (!t || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) return false;
  }
  return true;
}

// ------------------------------------------------------------------ mutations

const mutationArb = fc.oneof(
  // Bytes: flips in the length field, in the tensor entries of the header, in the data.
  fc.record({ op: fc.constant('flip' as const), region: fc.constantFrom('length', 'entries', 'data', 'data'), at: fc.nat(), bits: fc.array(fc.nat(7), { minLength: 1, maxLength: 3 }) }),
  fc.record({
    op: fc.constant('length' as const),
    value: fc.oneof(
      fc.constantFrom(0n, 1n, 2n, 7n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, 100n * 1024n * 1024n + 1n),
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      fc.integer({ min: -16, max: 16 }).map((d) => ({ delta: d })),
    ),
  }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('append' as const), count: fc.integer({ min: 1, max: 64 }), seed: fc.nat() }),
  fc.record({ op: fc.constant('splice' as const), at: fc.nat(), remove: fc.nat(8), insert: fc.uint8Array({ maxLength: 8 }) }),
  fc.record({ op: fc.constant('garbage' as const), length: fc.constantFrom(0, 1, 7, 8, 9, 64, 4096), seed: fc.nat() }),
  // The header, re-serialized with a consistent length.
  fc.record({ op: fc.constant('dtype' as const), entry: fc.nat(), value: fc.constantFrom<unknown>('F16', 'BF16', 'F64', 'I32', 'I64', 'U8', 'BOOL', 'f32', 'F32 ', '', null, 32, ['F32'], { F32: 1 }) }),
  fc.record({
    op: fc.constant('shape' as const),
    entry: fc.nat(),
    how: fc.constantFrom('append1', 'prepend1', 'drop', 'plus1', 'minus1', 'zero', 'negative', 'fraction', 'string', 'null', 'huge', 'overflow', 'notArray', 'empty', 'swap'),
  }),
  fc.record({
    op: fc.constant('offsets' as const),
    entry: fc.nat(),
    how: fc.constantFrom('swapEnds', 'shift+4', 'shift-4', 'endPlus4', 'beginPlus4', 'pastEnd', 'negative', 'fraction', 'string', 'null', 'three', 'one', 'huge', 'overlapNext', 'sameAsOther', 'notArray'),
  }),
  fc.record({ op: fc.constant('name' as const), entry: fc.nat(), how: fc.constantFrom('renameToOther', 'random', 'delete', 'trailingSpace', 'proto', 'upper', 'extraEntry', 'extraZeroSize') }),
  fc.record({
    op: fc.constant('metadata' as const),
    how: fc.constantFrom('array', 'string', 'null', 'number', 'nonString', 'nestedObject', 'optionsNotJson', 'optionsArray', 'optionsNull', 'optionsArchOther', 'optionsInChannelsOther', 'optionsSeedOther'),
  }),
  fc.record({ op: fc.constant('headerType' as const), value: fc.constantFrom<unknown>([], 'x', 3, null, true, [{}]) }),
  // Mutations that keep the file valid: other key order, other data order, padding.
  fc.record({ op: fc.constant('reorder' as const), seed: fc.nat(), moveData: fc.boolean(), pad: fc.nat(16) }),
);
type Mutation = typeof mutationArb extends fc.Arbitrary<infer T> ? T : never;

function tensorNames(header: Record<string, unknown>): string[] {
  return Object.keys(header).filter((k) => k !== '__metadata__');
}

function mutate(base: Base, m: Mutation): Buffer {
  const bytes = Buffer.from(base.bytes);
  const parts = split(bytes);
  const header = structuredClone(parts.header) as Record<string, Record<string, unknown>>;
  const names = tensorNames(header);
  const pick = (i: number) => names[i % names.length];
  switch (m.op) {
    case 'flip': {
      const [lo, hi] = m.region === 'length' ? [0, 8] : m.region === 'entries' ? [parts.entriesStart, parts.headerEnd] : [parts.headerEnd, bytes.length];
      if (hi <= lo) return bytes;
      const at = lo + (m.at % (hi - lo));
      for (const bit of m.bits) bytes[at] ^= 1 << bit;
      return bytes;
    }
    case 'length': {
      const value = typeof m.value === 'bigint' ? m.value : BigInt(Math.max(0, parts.headerEnd - 8 + m.value.delta));
      bytes.writeBigUInt64LE(value, 0);
      return bytes;
    }
    case 'truncate':
      return bytes.subarray(0, m.at % bytes.length);
    case 'append': {
      const rand = mulberry32(m.seed);
      return Buffer.concat([bytes, Buffer.from(Array.from({ length: m.count }, () => Math.floor(rand() * 256)))]);
    }
    case 'splice': {
      const at = m.at % bytes.length;
      return Buffer.concat([bytes.subarray(0, at), Buffer.from(m.insert), bytes.subarray(Math.min(bytes.length, at + m.remove))]);
    }
    case 'garbage': {
      const rand = mulberry32(m.seed);
      return Buffer.from(Array.from({ length: m.length }, () => Math.floor(rand() * 256)));
    }
    case 'dtype':
      header[pick(m.entry)].dtype = m.value;
      return assemble(header, parts.data);
    case 'shape': {
      const entry = header[pick(m.entry)];
      const shape = [...(entry.shape as number[])];
      const edits: Record<string, () => unknown> = {
        append1: () => [...shape, 1],
        prepend1: () => [1, ...shape],
        drop: () => shape.slice(1),
        plus1: () => shape.map((d, i) => (i === 0 ? d + 1 : d)),
        minus1: () => shape.map((d, i) => (i === shape.length - 1 ? d - 1 : d)),
        zero: () => shape.map((d, i) => (i === 0 ? 0 : d)),
        negative: () => shape.map((d, i) => (i === 0 ? -d : d)),
        fraction: () => shape.map((d, i) => (i === 0 ? d + 0.5 : d)),
        string: () => shape.map(String),
        null: () => shape.map((d, i) => (i === 0 ? null : d)),
        huge: () => [2 ** 53, ...shape.slice(1)],
        // Products that overflow 64 bits yet wrap to the span (2^62 * 2^2 * 4 = 2^66 ~ 0 mod 2^64).
        overflow: () => [2 ** 31, 2 ** 31, 2 ** 31, 4],
        notArray: () => ({ 0: shape[0] }),
        empty: () => [],
        swap: () => [...shape].reverse(),
      };
      entry.shape = edits[m.how]();
      return assemble(header, parts.data);
    }
    case 'offsets': {
      const name = pick(m.entry);
      const entry = header[name];
      const [b, e] = entry.data_offsets as [number, number];
      const other = header[pick(m.entry + 1)].data_offsets as [number, number];
      const edits: Record<string, () => unknown> = {
        swapEnds: () => [e, b],
        'shift+4': () => [b + 4, e + 4],
        'shift-4': () => [b - 4, e - 4],
        endPlus4: () => [b, e + 4],
        beginPlus4: () => [b + 4, e],
        pastEnd: () => [b, parts.data.length + 4],
        negative: () => [-4, e],
        fraction: () => [b + 0.5, e],
        string: () => [String(b), String(e)],
        null: () => null,
        three: () => [b, e, e],
        one: () => [b],
        huge: () => [b, 2 ** 53],
        overlapNext: () => [b, e + 4],
        sameAsOther: () => [...other],
        notArray: () => ({ begin: b, end: e }),
      };
      entry.data_offsets = edits[m.how]();
      return assemble(header, parts.data);
    }
    case 'name': {
      const name = pick(m.entry);
      const rename = (to: string) => {
        const rebuilt: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(header)) {
          if (k === name) Object.defineProperty(rebuilt, to, { value: v, enumerable: true, writable: true, configurable: true });
          else if (k !== to) rebuilt[k] = v;
        }
        return rebuilt;
      };
      switch (m.how) {
        case 'renameToOther':
          return assemble(rename(pick(m.entry + 1)), parts.data);
        case 'random':
          return assemble(rename(`features.${90 + (m.entry % 9)}.weight`), parts.data);
        case 'delete':
          delete header[name];
          return assemble(header, parts.data);
        case 'trailingSpace':
          return assemble(rename(`${name} `), parts.data);
        case 'proto':
          return assemble(rename('__proto__'), parts.data);
        case 'upper':
          return assemble(rename(name.toUpperCase()), parts.data);
        case 'extraEntry':
          header['features.99.weight'] = { dtype: 'F32', shape: [1], data_offsets: [parts.data.length, parts.data.length + 4] };
          return assemble(header, Buffer.concat([parts.data, Buffer.alloc(4)]));
        case 'extraZeroSize':
          header['classifier.0.weight'] = { dtype: 'F32', shape: [0, 4], data_offsets: [0, 0] };
          return assemble(header, parts.data);
      }
      throw new Error(`unknown name mutation ${String((m as { how: unknown }).how)}`);
    }
    case 'metadata': {
      // A file without stored options takes its options from load(); only the metadata's form is mutated.
      if (header.__metadata__ === undefined && m.how.startsWith('options')) return bytes;
      const stored = header.__metadata__ ?? {};
      const options = (stored['generic-perceptual-loss'] === undefined ? {} : JSON.parse(stored['generic-perceptual-loss'] as string)) as Partial<PerceptualLossOptions>;
      const edits: Record<string, () => unknown> = {
        array: () => ['pt'],
        string: () => 'pt',
        null: () => null,
        number: () => 1,
        nonString: () => ({ ...stored, format: 1 }),
        nestedObject: () => ({ ...stored, extra: { a: 'b' } }),
        optionsNotJson: () => ({ ...stored, 'generic-perceptual-loss': '{"inChannels": 2,' }),
        optionsArray: () => ({ ...stored, 'generic-perceptual-loss': '[1, 2]' }),
        optionsNull: () => ({ ...stored, 'generic-perceptual-loss': 'null' }),
        // Valid options of another architecture: the tensors no longer match it.
        optionsArchOther: () => ({ ...stored, 'generic-perceptual-loss': JSON.stringify({ ...options, inChannels: 2, arch: [5, 'M', 6], layers: undefined, layerWeights: undefined }) }),
        optionsInChannelsOther: () => ({ ...stored, 'generic-perceptual-loss': JSON.stringify({ ...options, inChannels: (options.inChannels ?? 1) + 1 }) }),
        // Still valid: the weights come from the file, not from the stored seed.
        optionsSeedOther: () => ({ ...stored, 'generic-perceptual-loss': JSON.stringify({ ...options, seed: (options.seed ?? 0) + 7 }) }),
      };
      (header as Record<string, unknown>).__metadata__ = edits[m.how]();
      return assemble(header, parts.data);
    }
    case 'headerType':
      return assemble(m.value, parts.data);
    case 'reorder': {
      const rand = mulberry32(m.seed);
      const order = [...names].sort(() => rand() - 0.5);
      const rebuilt: Record<string, unknown> = {};
      if (header.__metadata__ !== undefined && rand() < 0.5) rebuilt.__metadata__ = header.__metadata__;
      let data = parts.data;
      if (m.moveData) {
        // Lay the data out in the new order, offsets to match.
        const chunks: Buffer[] = [];
        let offset = 0;
        for (const name of order) {
          const [b, e] = header[name].data_offsets as [number, number];
          chunks.push(parts.data.subarray(b, e));
          header[name].data_offsets = [offset, offset + (e - b)];
          offset += e - b;
        }
        data = Buffer.concat(chunks);
      }
      for (const name of order) rebuilt[name] = header[name];
      if (header.__metadata__ !== undefined && !('__metadata__' in rebuilt)) rebuilt.__metadata__ = header.__metadata__;
      return assemble(rebuilt, data, m.pad);
    }
  }
}

/** Whether load() of the mutant must succeed; and whose weights it must then hold. */
function expected(base: Base, bytes: Buffer, m: Mutation): Parsed | undefined {
  const parsed = parseStrict(bytes);
  if (!parsed || !matches(base, parsed)) return undefined;
  // The stored options: unchanged, or changed only where the test knows they stay valid.
  const before = split(base.bytes).header.__metadata__ as Record<string, string> | undefined;
  const after = parsed.metadata;
  const same = JSON.stringify(before) === JSON.stringify(after);
  if (!same && !(m.op === 'metadata' && m.how === 'optionsSeedOther')) return undefined;
  return parsed;
}

describe('safetensors mutations', () => {
  const stats = new Map<string, number>();

  it('every mutant of a valid file gives ERR_FILE, or, where it is still a valid file for the architecture, loads bit for bit', () => {
    const file = path.join(dir, 'mutant.safetensors');
    fc.assert(
      fc.property(fc.nat(BASES.length - 1), mutationArb, (which, m) => {
        casesRun += 1;
        const base = bases[which];
        const bytes = mutate(base, m);
        fs.writeFileSync(file, bytes);
        const want = expected(base, bytes, m);
        const key = `${m.op}:${want ? 'valid' : 'ERR_FILE'}`;
        stats.set(key, (stats.get(key) ?? 0) + 1);
        if (!want) {
          expectThrowsCode(() => PerceptualLoss.load(file, base.loadOptions), ['ERR_FILE']);
          return;
        }
        const loss = PerceptualLoss.load(file, base.loadOptions);
        try {
          const state = loss.stateDict();
          expect(Object.keys(state).sort()).toEqual([...base.shapes.keys()].sort());
          for (const [name, t] of want.tensors) {
            expect(state[name].shape).toEqual(t.shape);
            const bits = new Float32Array(t.bytes.length / 4);
            new Uint8Array(bits.buffer).set(t.bytes);
            expectSameBits(state[name].data, bits, name);
          }
          const { device: _device, seed: _seed, ...options } = loss.options;
          const { seed: _baseSeed, ...baseOptions } = base.options;
          expect(options).toEqual(baseOptions);
        } finally {
          loss.dispose();
        }
      }),
      fuzzParams(2500),
    );
    console.log(`safetensors mutations: ${JSON.stringify(Object.fromEntries([...stats].sort()))}`);
  });

  it('produced valid and invalid mutants of every kind', () => {
    const ops = ['flip', 'length', 'truncate', 'append', 'splice', 'garbage', 'dtype', 'shape', 'offsets', 'name', 'metadata', 'headerType', 'reorder'];
    for (const op of ops) expect((stats.get(`${op}:ERR_FILE`) ?? 0) + (stats.get(`${op}:valid`) ?? 0), op).toBeGreaterThan(0);
    // Data flips and reorderings keep files valid; the test must have loaded such files.
    expect(stats.get('flip:valid') ?? 0).toBeGreaterThan(20);
    expect(stats.get('reorder:valid') ?? 0).toBeGreaterThan(20);
    expect(casesRun).toBeGreaterThanOrEqual(Math.round(2000 * RUNS_SCALE));
  });
});
