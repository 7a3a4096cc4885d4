// Issue 14 item 6: a roster can make presence expensive only within bounds,
// and presence does not read it.
//
// - Groups per item (XMPP_MAX_ROSTER_GROUPS) and bytes per roster
//   (XMPP_MAX_ROSTER_BYTES) are bounded: a roster set beyond them is refused
//   (RFC 6121 §2.3.3) and nothing is stored.
// - What presence routing needs (who is subscribed) is kept in memory for an
//   online account and changed by roster changes, not read again for each
//   presence stanza: shown by changing the stored roster behind the
//   server's back (no roster push) and seeing the broadcast follow the
//   memory, until a roster change through the server refreshes it.
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { stanzaError, uid } from '../helpers/protocol.ts';
import { NS_ROSTER, barrier, connect, expect, fresh, isPresence, ready, rosterOf, subscribe } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_MAX_ROSTER_GROUPS: '3', XMPP_MAX_ROSTER_BYTES: '65536' });
});
test.after.always(async () => {
  await server?.stop();
});

async function user(t: ExecutionContext, base: string): Promise<Peer> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  const p = await connect(t, server.c2sPort, name);
  await ready(p);
  return p;
}

async function set(p: Peer, item: string) {
  const id = uid('set');
  const from = p.c.items.length;
  p.c.send(`<iq type='set' id='${id}'><query xmlns='${NS_ROSTER}'>${item}</query></iq>`);
  return expect(p, `the answer to ${id}`, (el) => el.name === 'iq' && el.attrs.id === id, from);
}

test('groups per item and bytes per roster are bounded; refused sets store nothing (RFC 6121 §2.3.3)', async (t) => {
  const alice = await user(t, 'alice');
  const groups = (n: number, size = 4) => Array.from({ length: n }, (_, i) => `<group>${String(i).padStart(size, 'g')}</group>`).join('');
  t.is((await set(alice, `<item jid='a@example.com'>${groups(3)}</item>`)).attrs.type, 'result');
  const tooMany = await set(alice, `<item jid='b@example.com'>${groups(4)}</item>`);
  t.is(stanzaError(tooMany).condition, 'not-acceptable');
  // 64 KiB in all: items of about 3 KB (three groups of 1000 bytes) until the roster is full.
  let refused;
  let n = 0;
  for (; n < 40; n++) {
    const r = await set(alice, `<item jid='big${n}@example.com' name='${'n'.repeat(20)}'>${groups(3, 1000)}</item>`);
    if (r.attrs.type === 'error') {
      refused = r;
      break;
    }
  }
  t.truthy(refused, 'the byte bound was reached');
  t.is(stanzaError(refused!).condition, 'policy-violation');
  t.true(n >= 19 && n <= 22, `about 64 KiB of items fit: ${n}`);
  const items = await rosterOf(alice);
  t.false(items.some((i) => i.attrs.jid === 'b@example.com' || i.attrs.jid === `big${n}@example.com`), 'nothing of the refused sets was stored');
  // Smaller again: an item's update that shrinks it always fits.
  t.is((await set(alice, `<item jid='big0@example.com'/>`)).attrs.type, 'result');
  t.is((await set(alice, `<item jid='big${n}@example.com'>${groups(1, 500)}</item>`)).attrs.type, 'result');
});

test('presence uses the subscribers kept in memory, not the stored roster; a roster change refreshes them', async (t) => {
  const alice = await user(t, 'alice');
  const bob = await user(t, 'bob');
  await subscribe(bob, alice); // bob gets alice's presence
  // A broadcast after the subscription: alice's worker reads her roster once.
  let b = bob.c.items.length;
  alice.c.send(`<presence><status>zero</status></presence>`);
  await expect(bob, "alice's first update", (el) => isPresence(alice.jid)(el) && el.getChildText('status') === 'zero', b);
  // Behind the server's back: bob's subscription to alice is gone from the store.
  const store = SqliteRosterStore.open(join(server.config.dataDir, 'roster.sqlite'));
  t.teardown(() => store.close());
  await store.setSubscription(alice.name, bob.bare, 'none', undefined);
  b = bob.c.items.length;
  alice.c.send(`<presence><status>one</status></presence>`);
  const p1 = await expect(bob, "alice's update", (el) => isPresence(alice.jid)(el) && el.getChildText('status') === 'one', b);
  t.is(p1.attrs.to, bob.bare, 'the update went out by the subscribers in memory');
  // A roster change through the server (any item) reaches alice's sessions and refreshes what they know.
  t.is((await set(alice, `<item jid='someone@example.com'/>`)).attrs.type, 'result');
  b = bob.c.items.length;
  alice.c.send(`<presence><status>two</status></presence>`);
  await barrier(alice, alice.c.items.length);
  const after = (await barrier(bob, b)).filter((el) => isPresence(alice.jid)(el));
  t.deepEqual(after.map((el) => el.toString()), [], 'after the refresh, the stored roster counts: bob is no subscriber');
});
