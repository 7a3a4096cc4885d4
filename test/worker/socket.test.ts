// A socket transferred to a worker is rebuilt there as an ordinary object
// over the same handle, and the connection works through it.
import test from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

const socketModule = new URL('../../src/worker/socket.ts', import.meta.url).href;

// The worker adopts each socket it is sent, reports whether V8 keeps the
// transferred shell and the adopted socket as fast objects, and echoes.
const workerCode = `
const { parentPort } = require('node:worker_threads');
require('node:v8').setFlagsFromString('--allow-natives-syntax');
const fast = new Function('o', 'return %HasFastProperties(o)');
import(${JSON.stringify(socketModule)}).then(({ adoptSocket }) => {
  parentPort.on('message', ({ socket }) => {
    const shellFast = fast(socket);
    const s = adoptSocket(socket);
    s.on('data', (d) => s.write(d));
    s.on('end', () => { parentPort.postMessage({ ended: true }); s.end(); });
    s.resume();
    parentPort.postMessage({ shellFast, adoptedFast: fast(s), shellHandle: socket._handle });
  });
  parentPort.postMessage({ ready: true });
});`;

test('the adopted socket is a fast object and carries the connection both ways to its end', async (t) => {
  const worker = new Worker(workerCode, { eval: true });
  t.teardown(() => worker.terminate());
  const inbox: Record<string, unknown>[] = [];
  let wake: (() => void) | undefined;
  worker.on('message', (m: Record<string, unknown>) => {
    inbox.push(m);
    wake?.();
  });
  const next = async () => {
    while (inbox.length === 0) await new Promise<void>((r) => (wake = r));
    return inbox.shift()!;
  };
  t.deepEqual(await next(), { ready: true });

  const server = net.createServer({ pauseOnConnect: true }, (socket) => worker.postMessage({ socket }, [socket as never]));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await once(client, 'connect');

  // Without adoption the worker would keep the slow shell (the premise).
  t.deepEqual(await next(), { shellFast: false, adoptedFast: true, shellHandle: null });

  client.write('ping');
  const [echo] = (await once(client, 'data')) as [Buffer];
  t.is(echo.toString(), 'ping');
  client.end();
  t.deepEqual(await next(), { ended: true });
  await once(client, 'close');
});
