import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readHttpHost, readTlsServerName } from '../../src/network/server-name.js';
import { captureClientHello } from '../helpers/tls-hello.js';

/** Splits one TLS record into two records carrying halves of its fragment. */
function splitRecord(record: Buffer): Buffer {
  const fragment = record.subarray(5);
  const half = Math.floor(fragment.length / 2);
  const header = (length: number) => {
    const bytes = Buffer.from(record.subarray(0, 5));
    bytes.writeUInt16BE(length, 3);
    return bytes;
  };
  return Buffer.concat([
    header(half),
    fragment.subarray(0, half),
    header(fragment.length - half),
    fragment.subarray(half),
  ]);
}

describe('TLS server name', () => {
  it('reads the SNI of a real ClientHello', async () => {
    const hello = await captureClientHello('allowed.test');
    assert.deepEqual(readTlsServerName(hello), { status: 'found', name: 'allowed.test' });
  });

  it('asks for more bytes until the ClientHello is complete', async () => {
    const hello = await captureClientHello('allowed.test');
    for (const length of [0, 3, 5, 40, hello.length - 1]) {
      assert.deepEqual(readTlsServerName(hello.subarray(0, length)), { status: 'incomplete' });
    }
  });

  it('reassembles a ClientHello split over two records', async () => {
    const hello = await captureClientHello('a.wild.test');
    assert.deepEqual(readTlsServerName(splitRecord(hello)), {
      status: 'found',
      name: 'a.wild.test',
    });
  });

  it('rejects a ClientHello without SNI', async () => {
    const hello = await captureClientHello(undefined);
    assert.equal(readTlsServerName(hello).status, 'invalid');
  });

  it('rejects bytes that are not TLS', () => {
    assert.equal(readTlsServerName(Buffer.from('GET / HTTP/1.1\r\n')).status, 'invalid');
    assert.equal(readTlsServerName(Buffer.from('SSH-2.0-OpenSSH')).status, 'invalid');
  });
});

describe('HTTP host', () => {
  const request = (text: string) => readHttpHost(Buffer.from(text.replaceAll('\n', '\r\n')));

  it('reads the Host header without its port', () => {
    assert.deepEqual(request('GET / HTTP/1.1\nHost: allowed.test:8080\nAccept: */*\n\n'), {
      status: 'found',
      name: 'allowed.test',
    });
    assert.deepEqual(request('GET /x HTTP/1.0\nhOsT:  Allowed.test\n\n'), {
      status: 'found',
      name: 'Allowed.test',
    });
  });

  it('waits for the end of the header block', () => {
    assert.deepEqual(request('GET / HTTP/1.1\nHost: allowed.test\n'), { status: 'incomplete' });
    assert.deepEqual(request('GE'), { status: 'incomplete' });
  });

  it('accepts an absolute-form target for the same host', () => {
    assert.equal(
      request('GET http://allowed.test/x HTTP/1.1\nHost: allowed.test\n\n').status,
      'found',
    );
  });

  it('rejects requests a server could read differently', () => {
    const cases = [
      'GET / HTTP/1.1\nHost: allowed.test\nHost: other.test\n\n',
      'GET / HTTP/1.1\n\n',
      'GET / HTTP/1.1\nX-A: 1\n Host: other.test\nHost: allowed.test\n\n',
      'GET http://other.test/ HTTP/1.1\nHost: allowed.test\n\n',
      'CONNECT other.test:443 HTTP/1.1\nHost: allowed.test\n\n',
      'GET / HTTP/2.0\nHost: allowed.test\n\n',
      '\x16\x03\x01\x02\x00',
    ];
    for (const text of cases) assert.equal(request(text).status, 'invalid', JSON.stringify(text));
  });
});
