// The roster module's handlers (RFC 6121 §2) on their own: a session-like
// object with only what they use, an in-memory SQLite store, and a push
// callback that records what would be pushed.
import test, { type ExecutionContext } from 'ava';
import { parse, type Element } from 'ltx';
import { roster, rosterQuery, pushQuery, isInterested, NS_ROSTER, MAX_NAME_BYTES, type RosterPushItem, type RosterDeps } from '../../src/modules/roster.ts';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';
import { EMPTY_VERSION, type RosterStore } from '../../src/roster/store.ts';
import { StanzaError, type StanzaCondition } from '../../src/xmpp/errors.ts';
import type { Session } from '../../src/session/session.ts';
import type { ServerModule } from '../../src/modules/module.ts';

const DOMAIN = 'localhost';

interface FakeSession {
  username: string | null;
  anonLocal?: string;
  bare: string;
  jid: string;
  rosterRequested?: boolean;
}

function session(local: string, resource = 'res', anonymous = false): FakeSession {
  const bare = `${local}@${DOMAIN}`;
  return { username: anonymous ? null : local, ...(anonymous ? { anonLocal: local } : {}), bare, jid: `${bare}/${resource}` };
}

interface Pushed {
  user: string;
  item: RosterPushItem;
  version: string;
}

interface Harness {
  module: ServerModule;
  store: RosterStore;
  pushes: Pushed[];
  get(xml: string, s?: FakeSession): Promise<Element | null>;
  set(xml: string, s?: FakeSession): Promise<Element | null>;
  alice: FakeSession;
}

function harness(t: ExecutionContext, opts: Partial<RosterDeps> = {}): Harness {
  const store = opts.store ?? SqliteRosterStore.open(':memory:');
  t.teardown(() => store.close());
  const pushes: Pushed[] = [];
  const module = roster({ store, maxItems: 100, push: (user, item, version) => pushes.push({ user, item, version }), ...opts });
  const alice = session('alice');
  const call = (type: 'get' | 'set') => async (xml: string, s: FakeSession = alice) => {
    const iq = parse(xml);
    iq.attrs.from = s.jid; // as the router stamps it
    return (await module.account![`${type} ${NS_ROSTER}`](iq, s as unknown as Session)) as Element | null;
  };
  return { module, store, pushes, get: call('get'), set: call('set'), alice };
}

/** An iq whose payload is <query xmlns='jabber:iq:roster'>inner</query>. */
const iq = (type: 'get' | 'set', inner = '', attrs = '', queryAttrs = '') =>
  `<iq type='${type}' id='r1'${attrs}><query xmlns='${NS_ROSTER}'${queryAttrs}>${inner}</query></iq>`;

async function fails(t: ExecutionContext, p: Promise<unknown>, condition: StanzaCondition, text?: RegExp): Promise<void> {
  const err = await t.throwsAsync(p, { instanceOf: StanzaError });
  t.is(err?.condition, condition, err?.message);
  if (text) t.regex(err!.message, text);
}

const itemsOf = (q: Element) => q.getChildren('item').map((i) => ({ ...i.attrs, groups: i.getChildren('group').map((g) => g.getText()) }));

test('features: jabber:iq:roster; handlers only for the account', (t) => {
  const { module } = harness(t);
  t.deepEqual(module.features, [NS_ROSTER]);
  t.is(module.server, undefined);
  t.deepEqual(Object.keys(module.account!).sort(), [`get ${NS_ROSTER}`, `set ${NS_ROSTER}`]);
});

test('§2.1.3 roster get: the empty roster, with its version; the session becomes interested', async (t) => {
  const h = harness(t);
  t.false(isInterested(h.alice));
  const q = (await h.get(iq('get')))!;
  t.is(q.name, 'query');
  t.is(q.attrs.xmlns, NS_ROSTER);
  t.is(q.attrs.ver, EMPTY_VERSION);
  t.is(q.children.length, 0);
  t.true(isInterested(h.alice));
  t.true(h.alice.rosterRequested);
});

test('§2.1.3 roster get returns every item with name, subscription, ask and groups', async (t) => {
  const h = harness(t);
  await h.set(iq('set', `<item jid='bob@example.com' name='Bob'><group>Friends</group><group>Work</group></item>`));
  await h.set(iq('set', `<item jid='carol@example.com'/>`));
  await h.store.setSubscription('alice', 'carol@example.com', 'to', 'subscribe');
  const q = (await h.get(iq('get')))!;
  t.is(q.attrs.ver, (await h.store.get('alice')).version);
  t.deepEqual(itemsOf(q), [
    { jid: 'bob@example.com', name: 'Bob', subscription: 'none', groups: ['Friends', 'Work'] },
    { jid: 'carol@example.com', subscription: 'to', ask: 'subscribe', groups: [] },
  ]);
});

test('§2.6.3 versioning: the current version gets an empty result, any other the whole roster', async (t) => {
  const h = harness(t);
  t.is(await h.get(iq('get', '', '', ` ver='${EMPTY_VERSION}'`)), null);
  await h.set(iq('set', `<item jid='bob@x'/>`));
  const v1 = h.pushes[0].version;
  t.is(await h.get(iq('get', '', '', ` ver='${v1}'`)), null, 'up to date');
  t.true(isInterested(h.alice), 'an up-to-date client is interested too');
  const stale = (await h.get(iq('get', '', '', ` ver='${EMPTY_VERSION}'`)))!;
  t.is(stale.attrs.ver, v1);
  t.is(stale.getChildren('item').length, 1);
  const none = (await h.get(iq('get', '', '', ` ver=''`)))!; // no cache
  t.is(none.attrs.ver, v1);
  const unknown = (await h.get(iq('get', '', '', ` ver='what-is-this'`)))!;
  t.is(unknown.getChildren('item').length, 1);
  await h.set(iq('set', `<item jid='bob@x' name='B'/>`));
  const changed = (await h.get(iq('get', '', '', ` ver='${v1}'`)))!;
  t.is(changed.attrs.ver, h.pushes[1].version);
  t.not(changed.attrs.ver, v1);
});

test('§2.1.3 a roster get with items, or another payload, is a bad request', async (t) => {
  const h = harness(t);
  await fails(t, h.get(iq('get', `<item jid='bob@x'/>`)), 'bad-request');
  await fails(t, h.get(`<iq type='get' id='x'><list xmlns='${NS_ROSTER}'/></iq>`), 'bad-request');
  t.false(isInterested(h.alice), 'a refused get does not make the session interested');
});

test('§2.1.5/§2.3.3 only the account itself: another account\'s roster is forbidden; its own bare JID is fine', async (t) => {
  const h = harness(t);
  await fails(t, h.get(iq('get', '', ` to='bob@${DOMAIN}'`)), 'forbidden');
  await fails(t, h.set(iq('set', `<item jid='carol@x'/>`, ` to='bob@${DOMAIN}'`)), 'forbidden');
  await fails(t, h.set(iq('set', `<item jid='carol@x' subscription='remove'/>`, ` to='bob@${DOMAIN}'`)), 'forbidden');
  await fails(t, h.get(iq('get', '', ` to='${DOMAIN}'`)), 'forbidden');
  t.deepEqual(h.pushes, []);
  t.deepEqual((await h.store.get('bob')).items, []);
  t.deepEqual((await h.store.get('alice')).items, []);
  t.truthy(await h.get(iq('get', '', ` to='ALICE@${DOMAIN.toUpperCase()}'`)));
  t.is(await h.set(iq('set', `<item jid='carol@x'/>`, ` to='alice@${DOMAIN}'`)), null);
  t.is(h.pushes.length, 1);
});

test('§2.3 roster set adds an item: empty result, one push with the item and the new version', async (t) => {
  const h = harness(t);
  const r = await h.set(iq('set', `<item jid='Bob@Example.COM' name='Bob'><group>Friends</group></item>`));
  t.is(r, null);
  const item = { jid: 'bob@example.com', name: 'Bob', subscription: 'none' as const, groups: ['Friends'] };
  t.deepEqual(h.pushes, [{ user: 'alice', item, version: (await h.store.get('alice')).version }]);
  t.deepEqual((await h.store.get('alice')).items, [item], 'the JID is normalised');
  await h.set(iq('set', `<item jid='gateway.example.org'/>`));
  t.deepEqual(h.pushes[1].item, { jid: 'gateway.example.org', subscription: 'none', groups: [] }, 'a domain JID is an item too');
});

test('§2.4 roster set updates an item: name and groups replaced, subscription state kept; pushed', async (t) => {
  const h = harness(t);
  await h.set(iq('set', `<item jid='bob@x' name='Bob'><group>A</group><group>B</group></item>`));
  await h.store.setSubscription('alice', 'bob@x', 'both', undefined);
  await h.set(iq('set', `<item jid='bob@x' name='Robert'><group>C</group></item>`));
  t.deepEqual(h.pushes[1].item, { jid: 'bob@x', name: 'Robert', subscription: 'both', groups: ['C'] });
  await h.set(iq('set', `<item jid='bob@x' name=''/>`));
  t.deepEqual(h.pushes[2].item, { jid: 'bob@x', subscription: 'both', groups: [] }, 'an empty name is no name');
  t.deepEqual(new Set(h.pushes.map((p) => p.version)).size, 3);
});

test('§2.1.2.5 a subscription other than "remove" in a roster set is ignored, and so are ask and approved', async (t) => {
  const h = harness(t);
  await h.set(iq('set', `<item jid='bob@x' subscription='both' ask='subscribe' approved='true'/>`));
  t.deepEqual(h.pushes[0].item, { jid: 'bob@x', subscription: 'none', groups: [] });
  await h.store.setSubscription('alice', 'bob@x', 'to', undefined);
  await h.set(iq('set', `<item jid='bob@x' subscription='none'/>`));
  t.deepEqual(h.pushes[1].item, { jid: 'bob@x', subscription: 'to', groups: [] });
});

test('§2.3.3 a roster set carries exactly one item', async (t) => {
  const h = harness(t);
  await fails(t, h.set(iq('set')), 'bad-request');
  await fails(t, h.set(iq('set', `<item jid='a@x'/><item jid='b@x'/>`)), 'bad-request');
  await fails(t, h.set(`<iq type='set' id='x'><list xmlns='${NS_ROSTER}'><item jid='a@x'/></list></iq>`), 'bad-request');
  t.deepEqual(h.pushes, []);
  t.deepEqual((await h.store.get('alice')).items, []);
});

test('the item JID: required, well-formed, bare, not the account itself', async (t) => {
  const h = harness(t);
  await fails(t, h.set(iq('set', `<item name='nobody'/>`)), 'bad-request');
  await fails(t, h.set(iq('set', `<item jid=''/>`)), 'jid-malformed');
  await fails(t, h.set(iq('set', `<item jid='a@b@c'/>`)), 'jid-malformed');
  await fails(t, h.set(iq('set', `<item jid='@example.com'/>`)), 'jid-malformed');
  await fails(t, h.set(iq('set', `<item jid='bob@x/phone'/>`)), 'bad-request', /resource/);
  await fails(t, h.set(iq('set', `<item jid='bob@x/phone' subscription='remove'/>`)), 'bad-request');
  await fails(t, h.set(iq('set', `<item jid='alice@${DOMAIN}'/>`)), 'not-allowed');
  await fails(t, h.set(iq('set', `<item jid='ALICE@${DOMAIN.toUpperCase()}.'/>`)), 'not-allowed');
  t.deepEqual(h.pushes, []);
  t.deepEqual((await h.store.get('alice')).items, []);
});

test('§2.3.3 groups: duplicates are a bad request, an empty group is not acceptable', async (t) => {
  const h = harness(t);
  await fails(t, h.set(iq('set', `<item jid='bob@x'><group>Friends</group><group>Friends</group></item>`)), 'bad-request', /twice/);
  await fails(t, h.set(iq('set', `<item jid='bob@x'><group>Friends</group><group></group></item>`)), 'not-acceptable');
  await fails(t, h.set(iq('set', `<item jid='bob@x'><group/></item>`)), 'not-acceptable');
  t.deepEqual(h.pushes, []);
  // Case and spacing make different groups.
  await h.set(iq('set', `<item jid='bob@x'><group>Friends</group><group>friends</group><group> Friends</group></item>`));
  t.deepEqual(h.pushes[0].item.subscription !== 'remove' && h.pushes[0].item.groups, ['Friends', 'friends', ' Friends']);
});

test('§2.3.3 name and group length limits count UTF-8 bytes', async (t) => {
  const h = harness(t);
  const okName = 'n'.repeat(MAX_NAME_BYTES);
  const longName = 'é'.repeat(512); // 512 characters, 1024 bytes
  await fails(t, h.set(iq('set', `<item jid='bob@x' name='${longName}'/>`)), 'not-acceptable', /name/);
  await fails(t, h.set(iq('set', `<item jid='bob@x'><group>${'é'.repeat(512)}</group></item>`)), 'not-acceptable', /group/);
  t.deepEqual(h.pushes, []);
  await h.set(iq('set', `<item jid='bob@x' name='${okName}'><group>${'g'.repeat(1023)}</group></item>`));
  t.is(h.pushes.length, 1);

  const small = harness(t, { maxNameBytes: 3, maxGroupBytes: 2 });
  await fails(t, small.set(iq('set', `<item jid='bob@x' name='four'/>`)), 'not-acceptable');
  await fails(t, small.set(iq('set', `<item jid='bob@x'><group>abc</group></item>`)), 'not-acceptable');
  await small.set(iq('set', `<item jid='bob@x' name='one'><group>ab</group></item>`));
  t.is(small.pushes.length, 1);
});

test('the roster size limit: adding beyond it is a policy violation; updating at the limit is fine', async (t) => {
  const h = harness(t, { maxItems: 2 });
  await h.set(iq('set', `<item jid='a@x'/>`));
  await h.set(iq('set', `<item jid='b@x'/>`));
  await fails(t, h.set(iq('set', `<item jid='c@x'/>`)), 'policy-violation', /at most 2/);
  t.is(h.pushes.length, 2);
  await h.set(iq('set', `<item jid='b@x' name='B'/>`));
  t.is(h.pushes.length, 3);
  await h.set(iq('set', `<item jid='a@x' subscription='remove'/>`));
  await h.set(iq('set', `<item jid='c@x'/>`));
  t.deepEqual((await h.store.get('alice')).items.map((i) => i.jid), ['b@x', 'c@x']);
});

test('§2.5 remove: empty result and a push of subscription "remove"; a missing item is item-not-found', async (t) => {
  const h = harness(t);
  await h.set(iq('set', `<item jid='bob@x' name='Bob'><group>G</group></item>`));
  t.is(await h.set(iq('set', `<item jid='Bob@X' subscription='remove' name='ignored'><group>ignored</group></item>`)), null);
  const { version, items } = await h.store.get('alice');
  t.deepEqual(items, []);
  t.deepEqual(h.pushes[1], { user: 'alice', item: { jid: 'bob@x', subscription: 'remove' }, version });
  await fails(t, h.set(iq('set', `<item jid='bob@x' subscription='remove'/>`)), 'item-not-found');
  await fails(t, h.set(iq('set', `<item jid='alice@${DOMAIN}' subscription='remove'/>`)), 'item-not-found');
  t.is(h.pushes.length, 2);
  t.is((await h.store.get('alice')).version, version);
});

test('an anonymous session has an empty roster and cannot store items', async (t) => {
  const h = harness(t);
  const anon = session('anon-1234', 'r', true);
  const q = (await h.get(iq('get'), anon))!;
  t.is(q.attrs.ver, EMPTY_VERSION);
  t.is(q.children.length, 0);
  t.true(isInterested(anon));
  t.is(await h.get(iq('get', '', '', ` ver='${EMPTY_VERSION}'`), anon), null);
  await fails(t, h.set(iq('set', `<item jid='bob@x'/>`), anon), 'not-allowed', /anonymous/);
  await fails(t, h.set(iq('set', `<item jid='bob@x'/>`, ` to='alice@${DOMAIN}'`), anon), 'forbidden');
  t.deepEqual(h.pushes, []);
});

test('each account has its own roster and its own pushes', async (t) => {
  const h = harness(t);
  const bob = session('bob', 'laptop');
  await h.set(iq('set', `<item jid='carol@x' name='for alice'/>`));
  await h.set(iq('set', `<item jid='carol@x' name='for bob'/>`), bob);
  t.deepEqual(h.pushes.map((p) => [p.user, p.item.jid]), [['alice', 'carol@x'], ['bob', 'carol@x']]);
  const q = (await h.get(iq('get'), bob))!;
  t.deepEqual(itemsOf(q), [{ jid: 'carol@x', name: 'for bob', subscription: 'none', groups: [] }]);
  t.true(isInterested(bob));
  t.false(isInterested(h.alice));
});

test('a store failure reaches the router as it is (it answers internal-server-error); nothing is pushed', async (t) => {
  const broken = new Error('redis is gone');
  const store = SqliteRosterStore.open(':memory:');
  const failing: RosterStore = {
    get: () => Promise.reject(broken),
    item: () => Promise.reject(broken),
    set: () => Promise.reject(broken),
    remove: () => Promise.reject(broken),
    setSubscription: () => Promise.reject(broken),
    transition: () => Promise.reject(broken),
    state: () => Promise.reject(broken),
    pendingRequests: () => Promise.reject(broken),
    removeAll: () => Promise.reject(broken),
    close: () => store.close(),
  };
  const h = harness(t, { store: failing });
  t.is(await t.throwsAsync(h.get(iq('get'))), broken);
  t.false(isInterested(h.alice));
  t.is(await t.throwsAsync(h.set(iq('set', `<item jid='bob@x'/>`))), broken);
  t.is(await t.throwsAsync(h.set(iq('set', `<item jid='bob@x' subscription='remove'/>`))), broken);
  t.deepEqual(h.pushes, []);
});

test.serial('a push callback that throws does not turn a stored change into an error; the failure is logged', async (t) => {
  const store = SqliteRosterStore.open(':memory:');
  const h = harness(t, { store, push: () => { throw new Error('no route'); } });
  // The log goes to stderr: captured here, so that it is checked instead of printed.
  const logged: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => (logged.push(String(chunk)), true)) as typeof process.stderr.write;
  try {
    t.is(await h.set(iq('set', `<item jid='bob@x'/>`)), null);
    t.is((await store.get('alice')).items.length, 1);
    t.is(await h.set(iq('set', `<item jid='bob@x' subscription='remove'/>`)), null);
  } finally {
    process.stderr.write = write;
  }
  const failures = logged.map((l) => JSON.parse(l) as { level: string; msg: string; err: string }).filter((l) => l.msg === 'roster push failed');
  t.is(failures.length, 2, 'one line per failed push');
  t.true(failures.every((l) => l.level === 'error' && l.err.includes('no route')));
});

test('push payloads: one item and the version; a removal carries only jid and subscription', (t) => {
  const q = pushQuery({ jid: 'bob@x', name: 'B & "b"', subscription: 'from', ask: 'subscribe', groups: ['<G>'] }, 'v1');
  t.is(q.toString(), `<query xmlns="${NS_ROSTER}" ver="v1"><item jid="bob@x" name="B &amp; &quot;b&quot;" subscription="from" ask="subscribe"><group>&lt;G&gt;</group></item></query>`);
  t.is(pushQuery({ jid: 'bob@x', subscription: 'remove' }, 'v2').toString(), `<query xmlns="${NS_ROSTER}" ver="v2"><item jid="bob@x" subscription="remove"/></query>`);
  t.is(rosterQuery([]).toString(), `<query xmlns="${NS_ROSTER}"/>`);
  const parsed = parse(q.toString());
  t.is(parsed.getChild('item')!.attrs.name, 'B & "b"');
});
