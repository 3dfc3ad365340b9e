// Hostile files: PerceptualLoss.load reads safetensors defensively. Valid files are
// mutated at random (bytes, the header length, the JSON header, offsets, shapes, dtypes, names,
// truncation, appended bytes); an independent strict reader of the format decides whether each
// mutant is still a valid file for the architecture. Every invalid one must give ERR_FILE; every
// valid one must load bit for bit (its weights are exactly the file's bytes). Pickle and
// TorchScript files are never loaded.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PerceptualLoss, setNumThreads, type PerceptualLossOptions } from '../lib/index';
import { expectSameBits, expectThrowsCode, fuzzParams, FUZZ_SEED, RUNS_SCALE } from './helpers/fuzz';
import { mulberry32 } from './helpers/random';
import { PYTHON } from './helpers/reference';
import { packFloat32, writeRawSafetensors } from './helpers/safetensors';

const ROOT = path.resolve(__dirname, '..');

let dir: string;
let casesRun = 0;

/** A valid file and what loading it must give. */
interface Base {
  name: string;
  file: string;
  bytes: Buffer;
  /** load() options needed (files without stored options). */
  loadOptions: Partial<PerceptualLossOptions>;
  /** name -> shape, for the architecture. */
  shapes: Map<string, number[]>;
  options: Record<string, unknown>;
}

const BASES: Array<{ name: string; options: PerceptualLossOptions; plain?: boolean }> = [
  { name: 'two-convs', options: { inChannels: 2, arch: [3, 'M', 4], seed: 1, device: 'cpu' } },
  { name: 'pool-tap', options: { inChannels: 1, arch: [2, 2, 'M', 3], layers: ['relu1_2', 'pool1', 'conv2_1'], styleWeight: 1, criterion: 'l1', device: 'cpu' } },
  { name: 'no-metadata', options: { inChannels: 3, arch: [2, 'M', 2], seed: 9, device: 'cpu' }, plain: true },
];
const bases: Base[] = [];

beforeAll(() => {
  setNumThreads(1);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpl-files-'));
  for (const b of BASES) {
    const loss = new PerceptualLoss(b.options);
    const file = path.join(dir, `${b.name}.safetensors`);
    if (b.plain) {
      const { header, data } = packFloat32(loss.stateDict());
      writeRawSafetensors(file, header, data);
    } else loss.save(file);
    const shapes = new Map(Object.entries(loss.stateDict()).map(([name, t]) => [name, t.shape]));
    const { device: _device, ...options } = loss.options;
    bases.push({ name: b.name, file, bytes: fs.readFileSync(file), loadOptions: b.plain ? { inChannels: b.options.inChannels, arch: b.options.arch } : {}, shapes, options });
    loss.dispose();
  }
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

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

/** The header JSON of a base, its data, and where the tensor entries start in the file. */
function split(bytes: Buffer): { header: Record<string, unknown>; data: Buffer; headerStart: number; headerEnd: number; entriesStart: number } {
  const n = Number(bytes.readBigUInt64LE(0));
  const text = bytes.subarray(8, 8 + n).toString('utf8');
  const header = JSON.parse(text) as Record<string, unknown>;
  // save() writes __metadata__ first: byte flips stay out of it (see 'flip' below).
  const meta = header.__metadata__ === undefined ? 0 : `"__metadata__":${JSON.stringify(header.__metadata__)},`.length;
  return { header, data: bytes.subarray(8 + n), headerStart: 8, headerEnd: 8 + n, entriesStart: 8 + 1 + meta };
}

function assemble(header: unknown, data: Buffer, pad = 0): Buffer {
  const json = Buffer.from(JSON.stringify(header) + ' '.repeat(pad), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, data]);
}

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

// ------------------------------------------------------------------ valid files

describe('valid files', () => {
  it('loads every bit pattern of the weights exactly: NaN payloads, infinities, -0, denormals', () => {
    const loss = new PerceptualLoss({ ...BASES[0].options });
    const state = loss.stateDict();
    const rand = mulberry32(FUZZ_SEED);
    const specials = [0x7fc00001, 0x7f800001, 0xffc12345, 0x7f800000, 0xff800000, 0x80000000, 0x00000001, 0x807fffff];
    const arrays: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const [name, t] of Object.entries(state)) {
      const words = Uint32Array.from({ length: t.data.length }, (_, i) => (i < specials.length ? specials[i] : Math.floor(rand() * 2 ** 32)));
      arrays[name] = { shape: t.shape, data: new Float32Array(words.buffer) };
    }
    const file = path.join(dir, 'bits.safetensors');
    const { header, data } = packFloat32(arrays);
    writeRawSafetensors(file, header, data);
    const loaded = PerceptualLoss.load(file, { inChannels: 2, arch: [3, 'M', 4] });
    for (const [name, t] of Object.entries(loaded.stateDict())) expectSameBits(t.data, arrays[name].data, name);
    loaded.dispose();
    loss.dispose();
  });

  it('round-trips save() and load() bit for bit, weights and results', () => {
    const loss = new PerceptualLoss({ ...BASES[1].options, seed: 77 });
    const file = path.join(dir, 'roundtrip.safetensors');
    loss.save(file);
    const loaded = PerceptualLoss.load(file);
    for (const [name, t] of Object.entries(loaded.stateDict())) expectSameBits(t.data, loss.stateDict()[name].data, name);
    const x = { data: Float32Array.from({ length: 2 * 1 * 8 * 8 }, (_, i) => Math.cos(i)), shape: [2, 1, 8, 8] };
    const y = { data: Float32Array.from({ length: 2 * 1 * 8 * 8 }, (_, i) => Math.sin(i)), shape: [2, 1, 8, 8] };
    const a = loss.lossAndGrad(x, y);
    const b = loaded.lossAndGrad(x, y);
    expect(b.loss).toBe(a.loss);
    expectSameBits(b.grad, a.grad, 'grad');
    loaded.dispose();
    loss.dispose();
  });
});

// ------------------------------------------------------------------ hostile headers

describe('hostile headers', () => {
  const withMetadata = (options: unknown, base = 0) => {
    const { header, data } = split(bases[base].bytes);
    const file = path.join(dir, `meta-${Math.random().toString(36).slice(2)}.safetensors`);
    fs.writeFileSync(file, assemble({ ...header, __metadata__: { format: 'pt', 'generic-perceptual-loss': JSON.stringify(options) } }, data));
    return file;
  };

  it.each([
    ['inChannels -1', { inChannels: -1, arch: [3, 'M', 4] }],
    ['an unknown option', { inChannels: 2, arch: [3, 'M', 4], bogus: 1 }],
    ['an unknown criterion', { inChannels: 2, arch: [3, 'M', 4], criterion: 'mse' }],
    ['a tap the arch lacks', { inChannels: 2, arch: [3, 'M', 4], layers: ['relu9_9'] }],
    ['__proto__ as an option', JSON.parse('{"inChannels": 2, "arch": [3, "M", 4], "__proto__": {"criterion": "l1"}}')],
  ])('stored options with %s are a bad file: ERR_FILE', (_, options) => {
    const file = withMetadata(options);
    expectThrowsCode(() => PerceptualLoss.load(file), ['ERR_FILE']);
  });

  it('refuses a tiny file whose stored options claim a huge network before building it: ERR_FILE, fast, without the memory', () => {
    // ~600 bytes that ask for four 2048x2048 convs (600 MB of weights to draw); the tensors in
    // the file are those of a 2-conv network, so the file cannot match.
    const file = withMetadata({ inChannels: 2048, arch: [2048, 2048, 2048, 2048] });
    const rss = process.memoryUsage().rss;
    const started = performance.now();
    expectThrowsCode(() => PerceptualLoss.load(file), ['ERR_FILE']);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(process.memoryUsage().rss - rss).toBeLessThan(100 * 2 ** 20);
  });

  it('refuses a header nested a million levels deep (ERR_FILE, no stack overflow)', () => {
    const json = Buffer.from(`{"a":${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}}`);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    const file = path.join(dir, 'deep.safetensors');
    fs.writeFileSync(file, Buffer.concat([length, json]));
    expectThrowsCode(() => PerceptualLoss.load(file, { inChannels: 2, arch: [3, 'M', 4] }), ['ERR_FILE']);
  });

  // The property is linear cost in the number of entries, timed against the same work at a
  // quarter of the size on the same machine: an absolute limit fails on a loaded machine or
  // under coverage instrumentation, a ratio does not (linear: 4x, quadratic: 16x).
  it('refuses a header of 200,000 empty tensors (ERR_FILE) in time linear in the entry count', () => {
    const refuseTime = (entries: number) => {
      const header: Record<string, unknown> = {};
      for (let i = 0; i < entries; i++) header[`t${i}`] = { dtype: 'F32', shape: [0], data_offsets: [0, 0] };
      const file = path.join(dir, `many-${entries}.safetensors`);
      fs.writeFileSync(file, assemble(header, Buffer.alloc(0)));
      let best = Infinity;
      for (let run = 0; run < 3; run++) {
        const started = performance.now();
        expectThrowsCode(() => PerceptualLoss.load(file, { inChannels: 2, arch: [3, 'M', 4] }), ['ERR_FILE']);
        best = Math.min(best, performance.now() - started);
      }
      return best;
    };
    const quarter = refuseTime(50_000);
    const full = refuseTime(200_000);
    expect(full / quarter, `${full.toFixed(0)} ms for 200,000 entries, ${quarter.toFixed(0)} ms for 50,000`).toBeLessThan(8);
    expect(full).toBeLessThan(20_000);
  });

  it('refuses a header length past the 100 MiB cap without reading it as JSON (ERR_FILE)', () => {
    const file = path.join(dir, 'capped.safetensors');
    const bytes = Buffer.alloc(8 + 16);
    bytes.writeBigUInt64LE(100n * 1024n * 1024n + 1n);
    fs.writeFileSync(file, bytes);
    const error = expectThrowsCode(() => PerceptualLoss.load(file, { inChannels: 2 }), ['ERR_FILE']);
    expect(error.message).toMatch(/header length/);
  });
});

// ------------------------------------------------------------------ not safetensors

describe('pickle and TorchScript', () => {
  let files: Record<string, string>;
  const marker = () => path.join(dir, 'pickle-ran');

  beforeAll(() => {
    // Real PyTorch files with the right tensor names, so that a permissive loader would take them,
    // and a pickle that runs a command when unpickled.
    const script = `
import pickle, sys, torch
d = sys.argv[1]
net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
state = {f"features.{k}": v for k, v in net.state_dict().items()}
torch.save(state, f"{d}/zip.pt")
torch.save(state, f"{d}/legacy.pt", _use_new_zipfile_serialization=False)
torch.jit.save(torch.jit.script(net), f"{d}/script.pt")
class Evil:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {d}/pickle-ran",))
with open(f"{d}/evil.pkl", "wb") as f:
    pickle.dump(Evil(), f, protocol=2)
with open(f"{d}/evil0.pkl", "wb") as f:
    pickle.dump(Evil(), f, protocol=0)
`;
    const run = spawnSync(PYTHON, ['-c', script, dir], { encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`could not write the PyTorch files: ${run.stderr}`);
    files = {
      'torch.save (zip)': path.join(dir, 'zip.pt'),
      'torch.save (legacy pickle)': path.join(dir, 'legacy.pt'),
      'torch.jit.save (TorchScript)': path.join(dir, 'script.pt'),
      'a pickle protocol 2 with a __reduce__ payload': path.join(dir, 'evil.pkl'),
      'a pickle protocol 0 with a __reduce__ payload': path.join(dir, 'evil0.pkl'),
    };
    // The same bytes under a .safetensors name.
    fs.copyFileSync(files['torch.save (zip)'], path.join(dir, 'zip.safetensors'));
    files['torch.save (zip) named .safetensors'] = path.join(dir, 'zip.safetensors');
  });

  it.each([
    'torch.save (zip)',
    'torch.save (legacy pickle)',
    'torch.jit.save (TorchScript)',
    'a pickle protocol 2 with a __reduce__ payload',
    'a pickle protocol 0 with a __reduce__ payload',
    'torch.save (zip) named .safetensors',
  ])('refuses %s with ERR_FILE and runs nothing from it', (name) => {
    expectThrowsCode(() => PerceptualLoss.load(files[name], { inChannels: 2, arch: [3, 'M', 4] }), ['ERR_FILE']);
    expect(fs.existsSync(marker())).toBe(false);
  });
});

// ------------------------------------------------------------------ paths that are not paths

describe('file arguments', () => {
  /** Runs `code` in a fresh process (descriptors of its own); returns how it ended. */
  function inChild(code: string): { status: number | null; stdout: string; stderr: string; timedOut: boolean } {
    const script = `
      const fs = require('node:fs');
      const { PerceptualLoss, PerceptualLossError } = require(${JSON.stringify(path.join(ROOT, 'dist/index.js'))});
      const loss = new PerceptualLoss({ inChannels: 1, arch: [2], device: 'cpu' });
      let outcome;
      try { ${code}; outcome = 'no error'; } catch (e) { outcome = e instanceof PerceptualLossError ? e.code : 'not a PerceptualLossError: ' + e; }
      process.stderr.write('OUTCOME ' + outcome + '\\n');
      process.exit(0);`;
    const run = spawnSync(process.execPath, ['-e', script], { encoding: 'latin1', timeout: 20_000, stdio: ['pipe', 'pipe', 'pipe'] });
    return { status: run.status, stdout: run.stdout ?? '', stderr: run.stderr ?? '', timedOut: run.error !== undefined || run.signal !== null };
  }

  it('load() given a number refuses it (ERR_FILE) instead of reading from that file descriptor', () => {
    // The descriptor of a valid file: a loader that took numbers as descriptors would load it.
    const run = inChild(`const fd = fs.openSync(${JSON.stringify(bases[0].file)}, 'r'); PerceptualLoss.load(fd)`);
    expect(run.timedOut).toBe(false);
    expect(run.stderr).toContain('OUTCOME ERR_FILE');
  });

  it('save() given a number refuses it (ERR_FILE) instead of writing the weights to that descriptor (1: stdout)', () => {
    const run = inChild('loss.save(1)');
    expect(run.stdout).not.toContain('generic-perceptual-loss');
    expect(run.stderr).toContain('OUTCOME ERR_FILE');
  });
});
