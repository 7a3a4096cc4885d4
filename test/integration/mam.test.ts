// The message archive (XEP-0313) read by slixmpp, a third-party client, with
// its own XEP-0313 and XEP-0059 code: the query form, the archive paged
// forwards and backwards, a conversation filtered by JID, and the #extended
// metadata, against messages sent over real TLS by other clients.
import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, ready } from '../helpers/im.ts';

let server: TestServer;

test.before(async () => {
  // One worker: the messages' archive rows are written before any later query there.
  server = await startTestServer({ XMPP_WORKERS: '1' });
  for (const u of ['alice', 'carol', 'bob']) await server.addUser(u, `${u}-pw`);
});
test.after.always(async () => {
  await server?.stop();
});

/** Runs the slixmpp client to its end; its JSON lines. */
async function slixmpp(t: import('ava').ExecutionContext, jid: string, password: string, peer: string): Promise<Record<string, unknown>[]> {
  const script = fileURLToPath(new URL('./peers/mam_client.py', import.meta.url));
  const serverCa = join(server.config.dataDir, 'tls', 'localhost.crt');
  const proc = spawn('/usr/bin/python3', [script, '127.0.0.1', String(server.c2sPort), jid, password, serverCa, peer], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => proc.kill('SIGKILL'));
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await within(new Promise<number | null>((resolve) => proc.on('exit', resolve)), WAIT * 3, 'the slixmpp client');
  t.is(code, 0, err);
  return out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

test('slixmpp reads the archive: the query form, pages forwards and backwards, one conversation, and the metadata', async (t) => {
  const alice = await connect(t, server.c2sPort, 'alice');
  await ready(alice);
  const carol = await connect(t, server.c2sPort, 'carol');
  await ready(carol);
  // bob is offline: the messages are archived for him and stored offline.
  const sent = ['a1', 'c1', 'a2', 'c2', 'a3'];
  // One after the other (a ping behind each): the archive's order is the order the server received them in.
  for (const b of sent) {
    const from = b.startsWith('a') ? alice : carol;
    from.c.send(`<message to='bob@localhost' type='chat'><body>${b}</body></message>`);
    await barrier(from, from.c.items.length);
  }
  const lines = await slixmpp(t, 'bob@localhost/slix', 'bob-pw', 'alice@localhost');
  const get = (k: string) => lines.find((l) => k in l)?.[k];
  t.is(lines.find((l) => 'error' in l)?.error, undefined);
  // Full-text search is off by default (XMPP_MAM_FULLTEXT): not offered.
  t.deepEqual(get('fields'), ['FORM_TYPE', 'with', 'start', 'end', 'before-id', 'after-id', 'ids']);
  t.deepEqual(get('forward'), sent, 'paged forwards two at a time with RSM <after/>');
  t.deepEqual(get('backward'), [...sent].reverse(), 'paged backwards from the end with RSM <before/>');
  t.deepEqual(get('with'), ['a1', 'a2', 'a3']);
  const start = lines.find((l) => 'start' in l);
  t.regex(String(start?.start), /^[0-9a-f]{24}$/);
  t.regex(String(start?.end), /^[0-9a-f]{24}$/);
  t.true(String(start?.start) < String(start?.end));
});
