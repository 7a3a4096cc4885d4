// The messages that cross threads own exactly their bytes: posting a view
// clones its whole underlying buffer.
import test from 'ava';
import { encode, decode } from '../../src/worker/wire.ts';

test('an encoded message owns exactly its bytes and stays intact after later encodes', (t) => {
  const a = encode({ t: 'ready' });
  const b = encode({ t: 'hello', threadId: 7 });
  t.is(a.buffer.byteLength, a.byteLength);
  t.is(b.buffer.byteLength, b.byteLength);
  t.not(a.buffer, b.buffer);
  t.deepEqual(decode(a), { t: 'ready' });
  t.deepEqual(decode(b), { t: 'hello', threadId: 7 });
});

test('a message posted to another port arrives with a buffer of its own size', async (t) => {
  const { port1, port2 } = new MessageChannel();
  const got = new Promise<Uint8Array>((resolve) => (port2 as unknown as import('node:worker_threads').MessagePort).once('message', resolve));
  port1.postMessage(encode({ t: 'bind', jid: 'a@localhost/r' }));
  const m = await got;
  port1.close();
  t.is(m.buffer.byteLength, m.byteLength);
  t.deepEqual(decode(m), { t: 'bind', jid: 'a@localhost/r' });
});
