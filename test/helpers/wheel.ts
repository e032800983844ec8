import { createHash } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';

/** A pure-Python wheel built in memory, so that tests can pip install without a network. */
export interface Wheel {
  fileName: string;
  contents: Buffer;
}

export function buildWheel(name: string, version: string, moduleSource: string): Wheel {
  const distInfo = `${name}-${version}.dist-info`;
  const files: [string, string][] = [
    [`${name}.py`, moduleSource],
    [`${distInfo}/METADATA`, `Metadata-Version: 2.1\nName: ${name}\nVersion: ${version}\n`],
    [
      `${distInfo}/WHEEL`,
      'Wheel-Version: 1.0\nGenerator: hearth-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    ],
  ];
  const record = files
    .map(([path, text]) => {
      const digest = createHash('sha256').update(text).digest('base64url');
      return `${path},sha256=${digest},${Buffer.byteLength(text)}`;
    })
    .concat(`${distInfo}/RECORD,,`)
    .join('\n');
  files.push([`${distInfo}/RECORD`, record + '\n']);
  return { fileName: `${name}-${version}-py3-none-any.whl`, contents: zip(files) };
}

/** Writes a zip archive with deflated entries: the subset of the format that pip reads. */
function zip(files: [string, string][]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [path, text] of files) {
    const name = Buffer.from(path);
    const data = Buffer.from(text);
    const compressed = deflateRawSync(data);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(8, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(compressed.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    locals.push(local, name, compressed);

    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(8, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(compressed.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name);
    offset += local.length + name.length + compressed.length;
  }
  const centralSize = centrals.reduce((size, part) => size + part.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, ...centrals, end]);
}

function crc32(data: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}
