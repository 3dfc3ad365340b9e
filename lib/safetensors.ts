// The safetensors format (an 8-byte little-endian header length, a JSON header, raw data),
// read defensively: every offset, size and name is checked before any data is touched.
import * as fs from 'node:fs';
import { PerceptualLossError } from './errors';

export interface NamedArray {
  name: string;
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, NamedArray>;
  metadata: Record<string, string>;
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export function writeSafetensors(file: string, arrays: readonly NamedArray[], metadata: Record<string, string>): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const a of arrays) {
    header[a.name] = { dtype: 'F32', shape: a.shape, data_offsets: [offset, offset + a.data.byteLength] };
    offset += a.data.byteLength;
  }
  // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let at = 8 + headerBytes.length;
  for (const a of arrays) {
    const bytes = Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength);
    bytes.copy(out, at);
    at += bytes.length;
  }
  try {
    fs.writeFileSync(file, out);
  } catch (error) {
    throw new PerceptualLossError('ERR_FILE', `Cannot write ${file}: ${(error as Error).message}`, { cause: error });
  }
}

function bad(file: string, why: string): never {
  throw new PerceptualLossError('ERR_FILE', `${file} is not a valid safetensors file: ${why}.`);
}

/** What a file that is plainly another format is, by its first bytes, with the way to safetensors. */
function formatOf(bytes: Buffer): string {
  const convert = 'write the weights with safetensors.torch.save_file(model.state_dict(), path)';
  if (bytes.subarray(0, 4).equals(Buffer.from('PK\x03\x04', 'latin1'))) {
    return ` (it is a zip archive, as torch.save and torch.jit.save write: ${convert})`;
  }
  if (bytes[0] === 0x80 && bytes[1] >= 2 && bytes[1] <= 5) return ` (it is a Python pickle, as torch.save writes: ${convert})`;
  return '';
}

/** A file whose first 8 bytes cannot be a safetensors header length: another format. */
function notSafetensors(file: string, bytes: Buffer, why: string): never {
  throw new PerceptualLossError(
    'ERR_FILE',
    `${file} is not a safetensors file${formatOf(bytes)}: ${why}. A safetensors file starts with an 8-byte little-endian header length and that many bytes of JSON.`,
  );
}

export function readSafetensors(file: string): SafetensorsFile {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    throw new PerceptualLossError('ERR_FILE', `Cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  if (bytes.length < 8) bad(file, `it is ${bytes.length} bytes long, shorter than the 8-byte header length`);
  const headerLength = bytes.readBigUInt64LE(0);
  if (headerLength > BigInt(bytes.length - 8)) {
    notSafetensors(file, bytes, `the header length ${headerLength} read from its first 8 bytes exceeds the file (${bytes.length} bytes)`);
  }
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    bad(file, `the header length ${headerLength} exceeds ${MAX_HEADER_BYTES} bytes`);
  }
  const dataStart = 8 + Number(headerLength);
  let header: unknown;
  try {
    header = JSON.parse(bytes.subarray(8, dataStart).toString('utf8'));
  } catch (error) {
    bad(file, `its header is not JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) bad(file, 'its header is not a JSON object');

  const dataLength = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, NamedArray>();
  const spans: Array<[number, number, string]> = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) bad(file, '__metadata__ is not an object');
      for (const [key, value] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof value !== 'string') bad(file, `metadata ${JSON.stringify(key)} is not a string`);
        metadata[key] = value;
      }
      continue;
    }
    if (entry === null || typeof entry !== 'object') bad(file, `entry ${JSON.stringify(name)} is not an object`);
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (dtype !== 'F32') bad(file, `tensor ${JSON.stringify(name)} has dtype ${JSON.stringify(dtype)}; only F32 is supported`);
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      bad(file, `tensor ${JSON.stringify(name)} has an invalid shape`);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1] ||
      offsets[1] > dataLength
    ) {
      bad(file, `tensor ${JSON.stringify(name)} has data offsets outside the ${dataLength} data bytes`);
    }
    const [begin, end] = offsets as [number, number];
    // Overflow-safe: stop multiplying once past the span.
    let expected = 4;
    for (const d of shape as number[]) {
      expected *= d;
      if (expected > end - begin) break;
    }
    if (expected !== end - begin) {
      bad(file, `tensor ${JSON.stringify(name)} of shape ${JSON.stringify(shape)} does not fill its ${end - begin} bytes`);
    }
    spans.push([begin, end, name]);
    const data = new Float32Array((end - begin) / 4);
    new Uint8Array(data.buffer).set(bytes.subarray(dataStart + begin, dataStart + end));
    tensors.set(name, { name, shape: [...(shape as number[])], data });
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let covered = 0;
  for (const [begin, end, name] of spans) {
    if (begin < covered) bad(file, `tensor ${JSON.stringify(name)} overlaps another tensor`);
    if (begin > covered) bad(file, `there is a hole in the data before tensor ${JSON.stringify(name)}`);
    covered = end;
  }
  if (covered !== dataLength) bad(file, `${dataLength - covered} trailing data bytes belong to no tensor`);
  return { tensors, metadata };
}
