// Every bad file gets a PerceptualLossError ERR_FILE with a message that says what was wrong:
// missing, truncated, garbage, bad headers, offsets, shapes, dtypes and names, and stored options
// that are not JSON; afterwards the loss object that threw still gives the answer it gave before
// (docs/api.md, "Errors").
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { PerceptualLoss, type PerceptualLossOptions } from '../../lib/index';
import { expectError, smallSubject, type Subject } from '../helpers/errors';
import { randint } from '../helpers/random';
import { packFloat32, writeRawSafetensors } from '../helpers/safetensors';

let small: Subject;
let dir: string;

beforeAll(() => {
  small = smallSubject();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pl-errors-files-'));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ files

describe('safetensors files', () => {
  /** A small valid file: [8, 'M', 16] with 3 input channels. */
  let good: string;
  let goodBytes: Buffer;
  beforeAll(() => {
    good = path.join(dir, 'good.safetensors');
    small.loss.save(good);
    goodBytes = fs.readFileSync(good);
    // The file is valid: it loads.
    PerceptualLoss.load(good).dispose();
  });

  const load = (file: string, options?: Partial<PerceptualLossOptions>) => () => PerceptualLoss.load(file, options);

  it('rejects a missing file (ERR_FILE), naming it', () => {
    const missing = path.join(dir, 'nope.safetensors');
    expectError(small, load(missing), 'ERR_FILE', [missing, 'ENOENT']);
  });

  it('rejects a directory (ERR_FILE)', () => {
    expectError(small, load(dir), 'ERR_FILE', [dir]);
  });

  it('rejects a file truncated inside its data (ERR_FILE)', () => {
    const file = path.join(dir, 'truncated.safetensors');
    fs.writeFileSync(file, goodBytes.subarray(0, goodBytes.length - 100));
    expectError(small, load(file), 'ERR_FILE', [file, 'not a valid safetensors file']);
  });

  it('rejects a file truncated inside its header (ERR_FILE)', () => {
    const file = path.join(dir, 'truncated-header.safetensors');
    fs.writeFileSync(file, goodBytes.subarray(0, 40));
    expectError(small, load(file), 'ERR_FILE', [file]);
  });

  it('rejects a file shorter than the 8-byte header length (ERR_FILE)', () => {
    const file = path.join(dir, 'tiny.safetensors');
    fs.writeFileSync(file, goodBytes.subarray(0, 5));
    expectError(small, load(file), 'ERR_FILE', ['5 bytes']);
  });

  it('rejects an empty file (ERR_FILE)', () => {
    const file = path.join(dir, 'empty.safetensors');
    fs.writeFileSync(file, Buffer.alloc(0));
    expectError(small, load(file), 'ERR_FILE', ['0 bytes']);
  });

  it('rejects garbage bytes (ERR_FILE)', () => {
    const file = path.join(dir, 'garbage.safetensors');
    fs.writeFileSync(file, Uint8Array.from(randint(4096, 0, 256, 99)));
    expectError(small, load(file), 'ERR_FILE', [file]);
  });

  // Another format's first 8 bytes, read as a length, exceed the file: it is not safetensors at all.
  it('says "not a safetensors file" for a text file, keeping the detail (ERR_FILE)', () => {
    const file = path.join(dir, 'notes.safetensors');
    fs.writeFileSync(file, 'These are not weights.\n');
    const bytes = fs.readFileSync(file);
    expectError(small, load(file), 'ERR_FILE', [
      `${file} is not a safetensors file: the header length ${bytes.readBigUInt64LE(0)} read from its first 8 bytes exceeds the file (23 bytes).`,
      'A safetensors file starts with an 8-byte little-endian header length',
    ]);
  });

  it.each([
    ['a zip archive (torch.save)', Buffer.from('PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl', 'latin1'), 'it is a zip archive, as torch.save and torch.jit.save write'],
    ['a pickle (an old torch.save)', Buffer.from('\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.', 'latin1'), 'it is a Python pickle, as torch.save writes'],
  ])('names %s and how to write safetensors (ERR_FILE)', (_, bytes, what) => {
    const file = path.join(dir, 'weights.pt');
    fs.writeFileSync(file, bytes);
    expectError(small, load(file), 'ERR_FILE', [`is not a safetensors file (${what}: write the weights with safetensors.torch.save_file(model.state_dict(), path))`, 'header length']);
  });

  it('rejects a header that is not JSON (ERR_FILE)', () => {
    const file = path.join(dir, 'not-json.safetensors');
    const body = Buffer.from('{"features.0.weight": nope}', 'utf8');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(body.length));
    fs.writeFileSync(file, Buffer.concat([length, body]));
    expectError(small, load(file), 'ERR_FILE', ['not JSON']);
  });

  it('rejects a header length that exceeds the file (ERR_FILE)', () => {
    const file = path.join(dir, 'long-header.safetensors');
    const bytes = Buffer.from(goodBytes);
    bytes.writeBigUInt64LE(BigInt(bytes.length), 0);
    fs.writeFileSync(file, bytes);
    expectError(small, load(file), 'ERR_FILE', ['header length', String(bytes.length)]);
    bytes.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, 0);
    fs.writeFileSync(file, bytes);
    expectError(small, load(file), 'ERR_FILE', ['header length']);
  });

  it('rejects tensors whose data offsets overlap (ERR_FILE)', () => {
    const file = path.join(dir, 'overlap.safetensors');
    const state = small.loss.stateDict();
    const { header, data } = packFloat32(state);
    // features.0.bias (8 floats, 32 bytes) claims the last 32 bytes of features.0.weight.
    const weightEnd = header['features.0.weight'].data_offsets[1];
    header['features.0.bias'].data_offsets = [weightEnd - 32, weightEnd];
    writeRawSafetensors(file, header, data);
    expectError(small, load(file), 'ERR_FILE', ['overlaps']);
  });

  it('rejects data offsets past the end of the data (ERR_FILE)', () => {
    const file = path.join(dir, 'past-end.safetensors');
    const { header, data } = packFloat32(small.loss.stateDict());
    const [begin, end] = header['features.3.bias'].data_offsets;
    header['features.3.bias'].data_offsets = [begin + 4, end + 4];
    writeRawSafetensors(file, header, data);
    expectError(small, load(file), 'ERR_FILE', ['features.3.bias', 'offsets']);
  });

  it('rejects a tensor whose shape does not fill its bytes (ERR_FILE)', () => {
    const file = path.join(dir, 'bad-shape.safetensors');
    const { header, data } = packFloat32(small.loss.stateDict());
    header['features.0.bias'].shape = [9];
    writeRawSafetensors(file, header, data);
    expectError(small, load(file), 'ERR_FILE', ['features.0.bias', '[9]']);
  });

  it('rejects a dtype other than F32 (ERR_FILE)', () => {
    const file = path.join(dir, 'f16.safetensors');
    const { header, data } = packFloat32(small.loss.stateDict());
    header['features.0.bias'].dtype = 'F16';
    writeRawSafetensors(file, header, data);
    expectError(small, load(file), 'ERR_FILE', ['features.0.bias', 'F16']);
  });

  it('rejects names that do not match the architecture (a vgg11 file loaded as vgg13)', () => {
    const file = path.join(dir, 'vgg11.safetensors');
    const vgg11 = new PerceptualLoss({ inChannels: 3, arch: 'vgg11', layers: ['relu2_1'] });
    vgg11.save(file);
    // vgg11 keeps features.0 and features.3; vgg13 up to relu2_1 needs features.0, .2 and .5.
    expectError(small, load(file, { arch: 'vgg13' }), 'ERR_FILE', ['does not match the architecture', 'features.2.weight', 'features.3.weight']);
  });

  it('rejects weights of the wrong shape (a 3-channel file loaded with inChannels 4)', () => {
    expectError(small, load(good, { inChannels: 4 }), 'ERR_FILE', ['features.0.weight', '[8, 3, 3, 3]', '[8, 4, 3, 3]']);
  });

  it('rejects stored options that are not JSON (ERR_FILE)', () => {
    const file = path.join(dir, 'bad-options.safetensors');
    const { header, data } = packFloat32(small.loss.stateDict());
    writeRawSafetensors(file, { __metadata__: { 'generic-perceptual-loss': '{inChannels: 3' }, ...header }, data);
    expectError(small, load(file), 'ERR_FILE', ['options']);
  });

  it('rejects a path it cannot write to in save() (ERR_FILE)', () => {
    const file = path.join(dir, 'no', 'such', 'folder', 'x.safetensors');
    expectError(small, () => small.loss.save(file), 'ERR_FILE', [file]);
  });
});
