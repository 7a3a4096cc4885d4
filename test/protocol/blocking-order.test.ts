// XEP-0191 on a node of two workers, the blocker on one and the blocked on
// the other, where each worker applies the other's change notices late
// (XMPP_TEST_CHANGE_DELAY_MS, as a busy worker would): the answer to a block
// or an unblock waits until the other worker has dropped its copy of the
// list, so that the very next stanza the other worker routes is judged by
// the new list (worker.ts announceChange).
import test from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, expect, isBody, newUser } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';

const NS_BLOCKING = 'urn:xmpp:blocking';
/** Far longer than a block's answer takes to reach the client and the next message to be routed. */
const DELAY_MS = 600;

// Read by the server's worker threads, which inherit this thread's environment.
process.env.XMPP_TEST_CHANGE_DELAY_MS = String(DELAY_MS);

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
});
test.after.always(async () => {
  await server?.stop();
});

async function set(p: Peer, inner: string): Promise<void> {
  const id = uid('blk');
  const res = await within(p.c.request(`<iq type='set' id='${id}'>${inner}</iq>`, id), WAIT, `${p.jid}: ${inner}`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
}

test('the answer to a block or an unblock comes once the other worker judges by the new list: the very next stanza from there is refused, then let through', async (t) => {
  // One after the other on a fresh node: each to the least busy worker, so not the same one.
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  let fa = alice.c.items.length;
  bob.c.send(`<message to='${alice.bare}' type='chat' id='b0'><body>before</body></message>`);
  await expect(alice, 'the message before the block', isBody('before'), fa);

  const started = Date.now();
  await set(alice, `<block xmlns='${NS_BLOCKING}'><item jid='${bob.bare}'/></block>`);
  t.true(Date.now() - started >= DELAY_MS, 'the answer waited for the other worker');
  const fb = bob.c.items.length;
  bob.c.send(`<message to='${alice.bare}' type='chat' id='b1'><body>after the block</body></message>`);
  const bounce = await expect(bob, 'the refusal', (el) => el.attrs.id === 'b1' && el.attrs.type === 'error', fb);
  t.is(stanzaError(bounce).condition, 'service-unavailable');

  await set(alice, `<unblock xmlns='${NS_BLOCKING}'><item jid='${bob.bare}'/></unblock>`);
  fa = alice.c.items.length;
  const fb2 = bob.c.items.length;
  bob.c.send(`<message to='${alice.bare}' type='chat' id='b2'><body>after the unblock</body></message>`);
  await expect(alice, 'the message after the unblock', isBody('after the unblock'), fa);
  t.false(bob.c.items.slice(fb2).some((it) => it.kind === 'el' && it.el.attrs.id === 'b2' && it.el.attrs.type === 'error'), 'not refused');
  t.false(alice.c.items.some((it) => it.kind === 'el' && it.el.attrs.id === 'b1'), 'the message refused never reached alice');
});
