import { createServer, type AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/** Captures the first flight of bytes a real TLS client sends, over loopback. */
export async function captureClientHello(servername: string | undefined): Promise<Buffer> {
  const received = new Promise<Buffer>((resolve) => {
    const server = createServer((socket) => {
      socket.once('data', (chunk: Buffer) => {
        resolve(chunk);
        socket.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      const client = tlsConnect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false });
      client.on('error', () => undefined);
    });
  });
  return received;
}
