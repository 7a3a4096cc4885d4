// Orders the RFC fixes, and availability from the moment presence is read,
// on one worker and across two workers of one node (the cluster file
// test/cluster/ordering.test.ts does the same across nodes):
//
// - RFC 6121 §3.1.6, §3.2.3, §3.3.3: an inbound subscription approval or
//   cancellation reaches the user's resources before the roster push it
//   causes ("This MUST occur before sending the roster push"), also when
//   the cancellation comes from a removed roster item (§2.5.2).
// - Issue 13 item 2: once the server has read a session's initial presence,
//   a message to the bare JID sent right after it is delivered live, never
//   stored offline, in a tight loop without sleeps.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { join } from 'node:path';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { uid } from '../helpers/protocol.ts';
import { connect, expect, fresh, isPresence, isPush, messagesAfterPresence, ready, rosterItem, subscribe } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';

let one: TestServer; // one worker
let two: TestServer; // two workers

test.before(async () => {
  [one, two] = await Promise.all([startTestServer({ XMPP_WORKERS: '1' }), startTestServer({ XMPP_WORKERS: '2' })]);
});
test.after.always(async () => {
  await Promise.all([one?.stop(), two?.stop()]);
});

const workerOf = (server: TestServer, jid: string) => server.hub.registry.lookup(jid)?.worker;

/** A fresh account logged in, on the worker `where` says (relative to `other`, when given). */
async function user(t: ExecutionContext, server: TestServer, base: string, other?: Peer): Promise<Peer> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  for (let i = 0; ; i++) {
    const p = await connect(t, server.c2sPort, name, `r${i}`);
    if (!other || server.config.workers === 1 || workerOf(server, p.jid) !== workerOf(server, other.jid)) return p;
    if (i > 20) throw new Error('could not place a session on another worker');
    p.c.destroy();
  }
}

/** Index in p's stream of the first element matching, from `from`. */
async function indexOf(p: Peer, what: string, pred: (el: Element) => boolean, from: number): Promise<number> {
  const el = await expect(p, what, pred, from);
  return p.c.items.findIndex((it, i) => i >= from && it.kind === 'el' && it.el === el);
}

const pushed = (jid: string, subscription: string) => (el: Element) => isPush(jid)(el) && rosterItem(el)?.attrs.subscription === subscription;

for (const [label, server] of [['one worker', () => one], ['two workers', () => two]] as const) {
  test(`${label}: an inbound approval, cancellation or unsubscribe comes before its roster push (RFC 6121 §3.1.6, §3.2.3, §3.3.3, §2.5.2)`, async (t) => {
    const s = server();
    const alice = await user(t, s, 'alice');
    const bob = await user(t, s, 'bob', alice);
    await ready(alice);
    await ready(bob);

    // §3.1.6: alice subscribes, bob approves; at alice, "subscribed" then the push (to).
    alice.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
    await expect(bob, 'the request', isPresence(alice.bare, 'subscribe'));
    let a = alice.c.items.length;
    bob.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
    const approval = await indexOf(alice, 'subscribed', isPresence(bob.bare, 'subscribed'), a);
    const push1 = await indexOf(alice, 'push (to)', pushed(bob.bare, 'to'), a);
    t.true(approval < push1, `subscribed (#${approval}) before the push (#${push1})`);

    // §3.3.3: alice unsubscribes; at bob, "unsubscribe" then the push (none).
    const b = bob.c.items.length;
    alice.c.send(`<presence to='${bob.bare}' type='unsubscribe'/>`);
    const unsub = await indexOf(bob, 'unsubscribe', isPresence(alice.bare, 'unsubscribe'), b);
    const push2 = await indexOf(bob, 'push (none)', pushed(alice.bare, 'none'), b);
    t.true(unsub < push2, `unsubscribe (#${unsub}) before the push (#${push2})`);

    // §3.2.3: subscribed again, then bob cancels; at alice, "unsubscribed" then the push (none).
    await subscribe(alice, bob);
    a = alice.c.items.length;
    bob.c.send(`<presence to='${alice.bare}' type='unsubscribed'/>`);
    const cancel = await indexOf(alice, 'unsubscribed', isPresence(bob.bare, 'unsubscribed'), a);
    const push3 = await indexOf(alice, 'push (none)', pushed(bob.bare, 'none'), a);
    t.true(cancel < push3, `unsubscribed (#${cancel}) before the push (#${push3})`);

    // §2.5.2: alice removes bob (both ways subscribed); at bob, the
    // cancellations (§3.2.3, §3.3.3) come before his push (none).
    await subscribe(alice, bob);
    await subscribe(bob, alice);
    const b2 = bob.c.items.length;
    alice.c.send(`<iq type='set' id='${uid('rm')}'><query xmlns='jabber:iq:roster'><item jid='${bob.bare}' subscription='remove'/></query></iq>`);
    const unsub2 = await indexOf(bob, 'unsubscribe', isPresence(alice.bare, 'unsubscribe'), b2);
    const unsubd2 = await indexOf(bob, 'unsubscribed', isPresence(alice.bare, 'unsubscribed'), b2);
    const push4 = await indexOf(bob, 'push (none)', pushed(alice.bare, 'none'), b2);
    t.true(unsub2 < push4 && unsubd2 < push4, `unsubscribe (#${unsub2}) and unsubscribed (#${unsubd2}) before the push (#${push4})`);
  });

  test(`${label}: a message to the bare JID sent once initial presence was read is delivered live, never stored (100 rounds, no sleeps)`, async (t) => {
    const s = server();
    const alice = await user(t, s, 'alice');
    const bob = await user(t, s, 'bob', alice);
    const stored = await messagesAfterPresence(alice, bob, 100);
    t.deepEqual(stored, [], 'every message delivered live, none through offline storage');
    const store = SqliteOfflineStore.open(join(s.config.dataDir, 'offline.sqlite'));
    t.teardown(() => store.close());
    t.is(await store.count(alice.name), 0);
  });
}
