// /readyz on a worker's HTTP server (web/http.ts), fed connections from a
// listener of the test's own as the acceptor would: however many ask at
// once, the node's readiness (a database ping, a registry check) is checked
// once, and that answer serves the requests right after it.
import test from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { WebServer } from '../../src/web/http.ts';
import { within } from '../helpers/protocol.ts';
import { get } from '../helpers/metrics.ts';

test('/readyz: requests at once share one check, and those right after it get its answer; each gets the check\'s answer', async (t) => {
  let calls = 0;
  let answered: { why: string | undefined } | undefined;
  const waiting: ((why: string | undefined) => void)[] = [];
  const answer = (why: string | undefined) => {
    answered = { why };
    for (const r of waiting.splice(0)) r(why);
  };
  const web = new WebServer({
    config: { domain: 'localhost', maxStanzaBytes: 65536, maxStanzaElements: 1000, httpTrustedProxies: '', httpPublicUrl: '', metrics: '', boshMaxWait: 60, httpRequestTimeoutMs: 30_000 },
    secureContext: tls.createSecureContext({}),
    session: () => {},
    bosh: () => {},
    metrics: async () => '',
    readiness: () => {
      calls++;
      return answered ? Promise.resolve(answered.why) : new Promise((resolve) => waiting.push(resolve));
    },
  });
  // Requests whose headers the server has read: its parser runs on a chunk before this listener, added after it, sees it.
  let read = 0;
  let more: () => void = () => {};
  const listener = net.createServer((socket) => {
    void web.serve(socket, false, {});
    let text = '';
    socket.on('data', (d: Buffer) => {
      const was = text.includes('\r\n\r\n');
      text += d.toString();
      if (!was && text.includes('\r\n\r\n')) {
        read++;
        more();
      }
    });
  });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  t.teardown(() => {
    web.close();
    listener.close();
  });
  const port = (listener.address() as net.AddressInfo).port;
  const asking = Array.from({ length: 5 }, () => get(port, '/readyz'));
  await within(new Promise<void>((resolve) => {
    more = () => read >= 5 && resolve();
    more();
  }), 10_000, 'the five requests read');
  t.is(calls, 1, 'five requests at once, one check under way');
  answer('database unreachable');
  const answers = await Promise.all(asking);
  t.deepEqual(answers.map((a) => a.status), [503, 503, 503, 503, 503]);
  t.regex(answers[0].body, /database unreachable/);
  const after = await get(port, '/readyz');
  t.is(after.status, 503, 'the answer just given');
  t.is(calls, 1, 'one check for them all');
});
