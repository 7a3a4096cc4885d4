// A removed account leaves nothing in chat rooms (accounts/removal.ts): its
// affiliations and registered nicknames go, in band (XEP-0077 §3.2, through
// a running server's storage thread) and from the CLI (`user remove`), so
// that a new account of the same name inherits none of them; others' stay,
// and the CLI makes no room store where the server never made one.
import test from 'ava';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { newUser } from '../helpers/im.ts';
import { iq } from '../helpers/pep.ts';
import { environment, run } from '../helpers/process.ts';
import { openAccountStore } from '../../src/accounts/open.ts';
import { openMucStore } from '../../src/muc/open.ts';
import { DEFAULT_ROOM_CONFIG, type RoomStore } from '../../src/muc/store.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({});
});
test.after.always(async () => {
  await server?.stop();
});

/** A room owned by `owner`, with `member` a member; both register a nickname. */
async function roomOf(store: RoomStore, name: string, owner: string, member: string): Promise<void> {
  await store.save({ room: name, config: { ...DEFAULT_ROOM_CONFIG, persistent: true }, affiliations: [{ jid: owner, affiliation: 'owner' }, { jid: member, affiliation: 'member' }], created: Date.now() });
  await store.registerNick(name, owner, 'Owner');
  await store.registerNick(name, member, 'Member');
}

test('an account removed in band takes its affiliations and nicknames along, in every room', async (t) => {
  const bob = await newUser(t, server, 'bob');
  const alice = await newUser(t, server, 'alice');
  // Beside the storage thread, which holds the same file (WAL: readers and a writer at once).
  const store = await openMucStore(server.config);
  t.teardown(() => store.close());
  const [bobs, alices] = [`${bob.bare.split('@')[0]}-room`, `${alice.bare.split('@')[0]}-room`];
  await roomOf(store, bobs, bob.bare, alice.bare);
  await roomOf(store, alices, alice.bare, bob.bare);
  const res = await iq(bob, 'set', `<query xmlns='jabber:iq:register'><remove/></query>`);
  t.is(res.attrs.type, 'result', res.toString());
  // The answer follows the stores' part of the removal (modules/register.ts).
  for (const [room, alicesNick] of [[bobs, 'Member'], [alices, 'Owner']]) {
    t.deepEqual((await store.get(room))?.affiliations.map((a) => a.jid), [alice.bare], `${room}: the room stays, without bob (ownerless if he owned it)`);
    t.is(await store.nickOf(room, bob.bare), undefined, room);
    t.is(await store.nickOf(room, alice.bare), alicesNick, `${room}: another's nickname stays`);
  }
});

test('user remove from the CLI takes them along, and makes no room store where there was none', async (t) => {
  const { env } = await environment(t);
  const dataDir = env.XMPP_DATA_DIR!;
  const where = { redisUrl: '', dataDir, scramIterations: 4096 };
  await (await openAccountStore(where)).close();
  const cli = (...args: string[]) => run(process.execPath, ['src/main.ts', ...args], env);
  t.is((await cli('user', 'add', 'alice', 'pw-123456')).code, 0);
  t.is((await cli('user', 'add', 'bob', 'pw-123456')).code, 0);
  const store = await openMucStore(where);
  await roomOf(store, 'room', 'alice@localhost', 'bob@localhost');
  await store.close();
  t.deepEqual(await cli('user', 'remove', 'alice'), { code: 0, stdout: 'removed alice@localhost\n', stderr: '' });
  const after = await openMucStore(where);
  t.deepEqual((await after.get('room'))?.affiliations, [{ jid: 'bob@localhost', affiliation: 'member' }]);
  t.is(await after.nickOwner('room', 'Owner'), undefined);
  t.is(await after.nickOwner('room', 'Member'), 'bob@localhost');
  await after.close();
  for (const f of ['muc.sqlite', 'muc.sqlite-wal', 'muc.sqlite-shm']) rmSync(join(dataDir, f), { force: true });
  t.deepEqual(await cli('user', 'remove', 'bob'), { code: 0, stdout: 'removed bob@localhost\n', stderr: '' });
  t.false(existsSync(join(dataDir, 'muc.sqlite')));
});
