// The MUC room store's contract (muc/store.ts), run against every backend:
// SQLite (sqlite.test.ts) and PostgreSQL (postgres.test.ts). `open` takes
// small bounds so that the bounds are reached.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { type RoomBounds, type RoomStore, type StoredRoom, DEFAULT_ROOM_CONFIG, MAX_NICK_BYTES, configJson, parseRoomConfig } from '../../src/muc/store.ts';

export type OpenMuc = (t: ExecutionContext, bounds?: Partial<RoomBounds>) => Promise<RoomStore>;

const room = (name: string, over: Partial<StoredRoom> = {}): StoredRoom => ({ room: name, config: { ...DEFAULT_ROOM_CONFIG }, affiliations: [], created: 1_000, ...over });

export function mucStoreContract(label: string, open: OpenMuc): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('a room saved is read back whole; a save again replaces configuration and subject, not affiliations nor creation time'), async (t) => {
    const s = await open(t);
    t.is(await s.get('lobby'), undefined);
    const cfg = { ...DEFAULT_ROOM_CONFIG, name: 'The Lobby', persistent: true, whois: 'anyone' as const, allowPm: 'moderators' as const, maxUsers: 30 };
    const made = room('lobby', { config: cfg, subject: { text: 'Welcome', by: 'alice', stamp: 1234 }, affiliations: [{ jid: 'bob@example.com', affiliation: 'member', reason: 'a friend' }, { jid: 'alice@example.com', affiliation: 'owner' }] });
    t.true(await s.save(made));
    t.deepEqual(await s.get('lobby'), { ...made, affiliations: [made.affiliations[1], made.affiliations[0]] }, 'affiliations sorted by JID');
    const cfg2 = { ...cfg, name: 'Renamed', public: false };
    t.true(await s.save({ room: 'lobby', config: cfg2, affiliations: [{ jid: 'mallory@example.com', affiliation: 'owner' }], created: 9_999 }));
    const after = await s.get('lobby');
    t.deepEqual(after?.config, cfg2);
    t.is(after?.subject, undefined, 'no subject given: none kept');
    t.is(after?.created, 1_000, 'created stays the first save’s');
    t.deepEqual(after?.affiliations.map((a) => a.jid), ['alice@example.com', 'bob@example.com'], 'affiliations are not replaced by a save');
    t.true(await s.save({ ...after!, subject: { text: '', by: '', stamp: 5 } }));
    t.deepEqual((await s.get('lobby'))?.subject, { text: '', by: '', stamp: 5 }, 'an empty subject (cleared by someone) is kept as such');
  });

  test(title('the configuration is stored as its known fields, missing ones read back as defaults'), async (t) => {
    const s = await open(t);
    const extra = { ...DEFAULT_ROOM_CONFIG, moderated: true, junk: 'x'.repeat(100) } as typeof DEFAULT_ROOM_CONFIG;
    t.false(configJson(extra).includes('junk'));
    t.deepEqual(parseRoomConfig('{"name":"old","membersOnly":true}'), { ...DEFAULT_ROOM_CONFIG, name: 'old', membersOnly: true });
    await s.save(room('r', { config: extra }));
    t.deepEqual((await s.get('r'))?.config, { ...DEFAULT_ROOM_CONFIG, moderated: true });
  });

  test(title('affiliations: set, change with a reason, none removes; only on an existing room; bounded per room for new JIDs'), async (t) => {
    const s = await open(t, { maxAffiliations: 3 });
    t.false(await s.setAffiliation('r', 'alice@example.com', 'owner'), 'no room, no affiliation');
    await s.save(room('r', { affiliations: [{ jid: 'alice@example.com', affiliation: 'owner' }] }));
    t.true(await s.setAffiliation('r', 'bob@example.com', 'member', 'invited'));
    t.true(await s.setAffiliation('r', 'bob@example.com', 'admin'));
    t.true(await s.setAffiliation('r', 'carol@example.com', 'outcast', 'spam'));
    t.deepEqual((await s.get('r'))?.affiliations, [
      { jid: 'alice@example.com', affiliation: 'owner' },
      { jid: 'bob@example.com', affiliation: 'admin' },
      { jid: 'carol@example.com', affiliation: 'outcast', reason: 'spam' },
    ], 'a change without a reason keeps none');
    const err = await t.throwsAsync(s.setAffiliation('r', 'dave@example.com', 'member'));
    t.is(err?.name, 'RoomListFullError');
    t.is((err as Error & { max: number }).max, 3);
    t.true(await s.setAffiliation('r', 'carol@example.com', 'member'), 'a JID already there may change at the bound');
    t.true(await s.setAffiliation('r', 'nobody@example.com', 'none'), 'none for a JID with none: nothing to do');
    t.true(await s.setAffiliation('r', 'carol@example.com', 'none'));
    t.true(await s.setAffiliation('r', 'dave@example.com', 'member'), 'room again under the bound');
    t.deepEqual((await s.get('r'))?.affiliations.map((a) => a.jid), ['alice@example.com', 'bob@example.com', 'dave@example.com']);
    await t.throwsAsync(s.save(room('big', { affiliations: ['a', 'b', 'c', 'd'].map((n) => ({ jid: `${n}@example.com`, affiliation: 'member' as const })) })), { name: 'RoomListFullError' });
    t.is(await s.get('big'), undefined, 'a room made with too many affiliations is not made');
  });

  test(title('rooms are bounded in number: a new room past the bound is refused, an existing one still saved'), async (t) => {
    const s = await open(t, { maxRooms: 2 });
    t.true(await s.save(room('a')));
    t.true(await s.save(room('b')));
    t.false(await s.save(room('c')));
    t.is(await s.get('c'), undefined);
    t.true(await s.save(room('a', { config: { ...DEFAULT_ROOM_CONFIG, name: 'A' } })), 'saving an existing room at the bound');
    await s.remove('b');
    t.true(await s.save(room('c')));
  });

  test(title('remove takes the room’s affiliations and nicknames along: a room made again under the name inherits nothing'), async (t) => {
    const s = await open(t);
    await s.save(room('r', { affiliations: [{ jid: 'alice@example.com', affiliation: 'owner' }] }));
    await s.save(room('other', { affiliations: [{ jid: 'alice@example.com', affiliation: 'owner' }] }));
    t.true(await s.registerNick('r', 'alice@example.com', 'Alice'));
    t.true(await s.registerNick('other', 'alice@example.com', 'Alice'));
    await s.remove('r');
    await s.remove('r');
    t.is(await s.get('r'), undefined);
    t.is(await s.nickOf('r', 'alice@example.com'), undefined);
    t.is(await s.nickOwner('r', 'Alice'), undefined);
    await s.save(room('r'));
    t.deepEqual((await s.get('r'))?.affiliations, []);
    t.is(await s.nickOwner('r', 'Alice'), undefined);
    t.is(await s.nickOwner('other', 'Alice'), 'alice@example.com', "another room's stay");
    t.deepEqual((await s.get('other'))?.affiliations.length, 1);
  });

  test(title('public rooms are listed by room, at most max, after a given room'), async (t) => {
    const s = await open(t);
    const pub = (name: string) => room(name, { config: { ...DEFAULT_ROOM_CONFIG, name: name.toUpperCase() } });
    for (const n of ['delta', 'alpha', 'charlie', 'bravo']) await s.save(pub(n));
    await s.save(room('aaa-hidden', { config: { ...DEFAULT_ROOM_CONFIG, public: false } }));
    t.deepEqual((await s.listPublic(10)).map((r) => r.room), ['alpha', 'bravo', 'charlie', 'delta']);
    t.deepEqual(await s.listPublic(2), [{ room: 'alpha', config: pub('alpha').config }, { room: 'bravo', config: pub('bravo').config }]);
    t.deepEqual((await s.listPublic(2, 'bravo')).map((r) => r.room), ['charlie', 'delta']);
    t.deepEqual(await s.listPublic(2, 'delta'), []);
    await s.save({ ...pub('alpha'), config: { ...pub('alpha').config, public: false } });
    t.deepEqual((await s.listPublic(10)).map((r) => r.room), ['bravo', 'charlie', 'delta'], 'made hidden: no longer listed');
  });

  test(title('registered nicknames (§7.10): one per JID, one JID per nickname, compared as given; only in an existing room; bounded'), async (t) => {
    const s = await open(t, { maxNicks: 2 });
    t.false(await s.registerNick('r', 'alice@example.com', 'Alice'), 'no such room');
    await s.save(room('r'));
    t.true(await s.registerNick('r', 'alice@example.com', 'Alice'));
    t.true(await s.registerNick('r', 'alice@example.com', 'Alice'), 'registering the same again');
    t.false(await s.registerNick('r', 'bob@example.com', 'Alice'), 'held by another JID');
    t.true(await s.registerNick('r', 'bob@example.com', 'alice'), 'another string is another nickname (the module prepares them)');
    t.is(await s.nickOwner('r', 'Alice'), 'alice@example.com');
    t.is(await s.nickOwner('r', 'alice'), 'bob@example.com');
    await t.throwsAsync(s.registerNick('r', 'carol@example.com', 'Carol'), { name: 'RoomListFullError' });
    t.true(await s.registerNick('r', 'alice@example.com', 'Ally'), 'a JID changes its nickname, at the bound too');
    t.is(await s.nickOf('r', 'alice@example.com'), 'Ally');
    t.is(await s.nickOwner('r', 'Alice'), undefined, 'the old one is free');
    t.true(await s.registerNick('r', 'carol@example.com', undefined), 'cancelling none');
    t.true(await s.registerNick('r', 'bob@example.com', undefined));
    t.is(await s.nickOf('r', 'bob@example.com'), undefined);
    t.true(await s.registerNick('r', 'carol@example.com', 'alice'), 'cancelled: free for another');
    await t.throwsAsync(s.registerNick('r', 'dave@example.com', ''), { instanceOf: RangeError });
    await s.registerNick('r', 'carol@example.com', undefined);
    await t.throwsAsync(s.registerNick('r', 'dave@example.com', 'é'.repeat(MAX_NICK_BYTES / 2 + 1)), { instanceOf: RangeError });
    t.true(await s.registerNick('r', 'dave@example.com', 'x'.repeat(MAX_NICK_BYTES)));
    t.is(await s.nickOf('r', 'dave@example.com'), 'x'.repeat(MAX_NICK_BYTES));
  });

  test(title('forget takes a JID’s affiliations and nicknames in every room, no one else’s; the room stays, ownerless if it was its only owner'), async (t) => {
    const s = await open(t);
    await s.save(room('r1', { affiliations: [{ jid: 'bob@example.com', affiliation: 'owner' }, { jid: 'alice@example.com', affiliation: 'member' }] }));
    await s.save(room('r2', { affiliations: [{ jid: 'bob@example.com', affiliation: 'outcast' }, { jid: 'bobby@example.com', affiliation: 'member' }] }));
    await s.registerNick('r1', 'bob@example.com', 'Bob');
    await s.registerNick('r2', 'bob@example.com', 'Bob');
    await s.registerNick('r2', 'alice@example.com', 'Alice');
    await s.forget('bob@example.com');
    t.deepEqual((await s.get('r1'))?.affiliations, [{ jid: 'alice@example.com', affiliation: 'member' }]);
    t.deepEqual((await s.get('r2'))?.affiliations, [{ jid: 'bobby@example.com', affiliation: 'member' }]);
    t.is(await s.nickOwner('r1', 'Bob'), undefined);
    t.is(await s.nickOwner('r2', 'Bob'), undefined);
    t.is(await s.nickOf('r2', 'alice@example.com'), 'Alice');
    t.truthy(await s.get('r1'), 'the room stays');
  });

  test(title('writers at once never pass a bound nor share a nickname (one writer per room, and per service for new rooms)'), async (t) => {
    const s = await open(t, { maxRooms: 3, maxAffiliations: 4 });
    const made = await Promise.all(Array.from({ length: 12 }, (_, i) => s.save(room(`r${i}`))));
    t.is(made.filter(Boolean).length, 3);
    const r = (await s.listPublic(100))[0].room;
    const set = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => s.setAffiliation(r, `u${i}@example.com`, 'member')));
    t.is(set.filter((x) => x.status === 'fulfilled').length, 4);
    t.true(set.every((x) => x.status === 'fulfilled' || (x.reason as Error).name === 'RoomListFullError'));
    t.is((await s.get(r))?.affiliations.length, 4);
    const nicks = await Promise.all(Array.from({ length: 12 }, (_, i) => s.registerNick(r, `u${i}@example.com`, 'Same')));
    t.is(nicks.filter(Boolean).length, 1);
  });
}
