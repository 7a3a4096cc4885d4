// Stanzas made of many small elements (a few bytes of input, a few hundred
// of memory each) are bounded by count: more than XMPP_MAX_STANZA_ELEMENTS
// elements, or four times that many attributes, end the stream with
// policy-violation; others carry on.
import test from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { login } from '../helpers/raw.ts';
import { expectStreamError, othersUnaffected, within } from '../helpers/protocol.ts';

const MAX = 64;
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_MAX_STANZA_ELEMENTS: String(MAX), XMPP_WORKERS: '1' });
  for (const u of ['bob', 'carol', 'dave']) await server.addUser(u, `${u}-pw`);
});
test.after.always(() => server.stop());

/** A message to `to` holding `n` elements in all (itself included). */
const withElements = (to: string, id: string, n: number) => `<message to='${to}' id='${id}' type='chat'><body>x</body>${'<x/>'.repeat(n - 2)}</message>`;
/** A message to `to` with `n` attributes in all (to, id and type included). */
const withAttributes = (to: string, id: string, n: number) =>
  `<message to='${to}' id='${id}' type='chat'><body ${Array.from({ length: n - 3 }, (_, i) => `a${i}='v'`).join(' ')}>x</body></message>`;

test.serial('a stanza with more elements than the limit ends the stream with policy-violation; bystanders keep chatting', async (t) => {
  const watcher = await login(server.c2sPort, 'carol', 'carol-pw', 'watch');
  const talker = await login(server.c2sPort, 'dave', 'dave-pw', 'talk');
  const attacker = await login(server.c2sPort, 'bob', 'bob-pw', 'many');
  // At the limit: delivered (sent to oneself).
  const ok = await within(attacker.c.request(withElements(attacker.jid, 'at-limit', MAX), 'at-limit'), 5000, 'the message at the limit');
  // Its children, less the archive id the server added (XEP-0359).
  t.is(ok.children.filter((c) => typeof c === 'string' || c.name !== 'stanza-id').length, MAX - 1);
  attacker.c.mark();
  attacker.c.send(withElements(attacker.jid, 'over', MAX + 1));
  await expectStreamError(t, attacker.c, 'policy-violation');
  await othersUnaffected(t, watcher, talker);
  for (const p of [watcher, talker]) p.c.destroy();
});

test.serial('a stanza with more attributes than four times the limit ends the stream with policy-violation', async (t) => {
  const watcher = await login(server.c2sPort, 'carol', 'carol-pw', 'watch2');
  const talker = await login(server.c2sPort, 'dave', 'dave-pw', 'talk2');
  const attacker = await login(server.c2sPort, 'bob', 'bob-pw', 'attrs');
  const ok = await within(attacker.c.request(withAttributes(attacker.jid, 'at-limit', 4 * MAX), 'at-limit'), 5000, 'the message at the limit');
  t.is(Object.keys(ok.getChild('body')!.attrs).length, 4 * MAX - 3);
  attacker.c.mark();
  attacker.c.send(withAttributes(attacker.jid, 'over', 4 * MAX + 1));
  await expectStreamError(t, attacker.c, 'policy-violation');
  await othersUnaffected(t, watcher, talker);
  for (const p of [watcher, talker]) p.c.destroy();
});
