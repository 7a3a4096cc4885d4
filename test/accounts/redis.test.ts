// The Redis account store against a real redis-server: the shared contract,
// then what only a networked, shared store has (key layout, the password
// never on the wire, losing Redis and getting it back).
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import net from 'node:net';
import { once } from 'node:events';
import { RedisAccountStore } from '../../src/accounts/redis.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { openAccountStore } from '../../src/accounts/open.ts';
import { verifyPassword, AccountExistsError, AccountNotFoundError } from '../../src/accounts/store.ts';
import { ready } from '../../src/cluster/redis.ts';
import { RedisServer, freePort, inspector as inspect, sharedRedisServer } from '../helpers/redis.ts';
import { accountStoreContract, assertNoPasswords } from './contract.ts';

const server = sharedRedisServer(test);

/** A plain client for looking at what the store wrote (this file's server unless told). */
const inspector = (t: ExecutionContext, url = server.url): Redis => inspect(t, url);

async function openStore(t: ExecutionContext, namespace?: string, url = server.url): Promise<RedisAccountStore> {
  const s = await RedisAccountStore.open(url, 4096, { namespace, name: 'test-accounts' });
  t.teardown(() => s.close());
  return s;
}

/** Every key name and every value in the whole server, whatever its type. */
async function dumpAll(r: Redis): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await r.scanBuffer(cursor, 'COUNT', 1000);
    cursor = next.toString();
    for (const key of keys) {
      out.push(key);
      const type = await r.type(key); // 'none': another test deleted it meanwhile
      if (type === 'none') continue;
      if (type === 'string') out.push((await r.getBuffer(key)) ?? Buffer.alloc(0));
      else if (type === 'hash') out.push(...Object.entries(await r.hgetallBuffer(key)).flatMap(([f, v]) => [Buffer.from(f), v]));
      else if (type === 'set') out.push(...await r.smembersBuffer(key));
      else if (type === 'zset') out.push(...await r.zrangeBuffer(key, '0', '-1'));
      else if (type === 'list') out.push(...await r.lrangeBuffer(key, 0, -1));
      else throw new Error(`unexpected ${type} at ${key.toString()}`);
    }
  } while (cursor !== '0');
  return out;
}

let namespaces = 0;

accountStoreContract('redis', async (t) => {
  // One server for the file, one namespace per test: the tests run at once.
  const namespace = `t${++namespaces}:`;
  return {
    store: await openStore(t, namespace),
    another: () => openStore(t, namespace), // a separate connection: another node
    dump: () => dumpAll(inspector(t)),
  };
});

test('key layout: one hash per account, a set of names, the fake-salt key', async (t) => {
  const s = await openStore(t); // the default namespace: only this test uses it
  const r = inspector(t);
  await s.create('Alice', 'pw');
  t.is(await r.type('xmpp:acct:alice'), 'hash');
  const fields = await r.hgetallBuffer('xmpp:acct:alice');
  t.deepEqual(Object.keys(fields).sort(), [
    'created',
    'sha1:iterations', 'sha1:salt', 'sha1:serverKey', 'sha1:storedKey',
    'sha256:iterations', 'sha256:salt', 'sha256:serverKey', 'sha256:storedKey',
  ]);
  t.is(fields['sha256:iterations'].toString(), '4096');
  t.is(fields['sha256:storedKey'].length, 32);
  t.is(fields['sha1:storedKey'].length, 20);
  t.true(Math.abs(Number(fields.created.toString()) - Date.now()) < 60_000);
  const creds = (await s.scram('alice', 'SHA-256'))!;
  t.deepEqual(creds.salt, fields['sha256:salt']);
  t.deepEqual(creds.storedKey, fields['sha256:storedKey']);
  t.deepEqual(await r.smembers('xmpp:accounts'), ['alice']);
  t.deepEqual(await r.getBuffer('xmpp:scram-fake-salt-key'), s.fakeSaltKey());
  t.true(await s.remove('alice'));
  t.is(await r.exists('xmpp:acct:alice'), 0);
  t.deepEqual(await r.smembers('xmpp:accounts'), []);
});

/**
 * Undoes the quoting of a MONITOR line (sdscatrepr): the arguments of one
 * command as the bytes that were sent.
 */
function monitorArgs(line: string): Buffer[] {
  const args: Buffer[] = [];
  const re = /"((?:[^"\\]|\\.)*)"/gs;
  for (const [, quoted] of line.matchAll(re)) {
    const bytes: number[] = [];
    for (let i = 0; i < quoted.length; i++) {
      const c = quoted[i];
      if (c !== '\\') { bytes.push(c.charCodeAt(0)); continue; }
      const e = quoted[++i];
      if (e === 'x') { bytes.push(parseInt(quoted.slice(i + 1, i + 3), 16)); i += 2; }
      else bytes.push(({ n: 10, r: 13, t: 9, b: 8, a: 7 } as Record<string, number>)[e] ?? e.charCodeAt(0));
    }
    args.push(Buffer.from(bytes));
  }
  return args;
}

test('the password never even travels to Redis (MONITOR sees every command)', async (t) => {
  const s = await openStore(t, 'monitored:');
  // A raw connection: MONITOR's output, byte for byte.
  const sock = net.connect(server.port, '127.0.0.1');
  t.teardown(() => { sock.destroy(); });
  await once(sock, 'connect');
  const end = `end-of-test-${Math.random()}`;
  let text = '';
  const sawEnd = new Promise<void>((resolve) => {
    sock.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.includes(end)) resolve();
    });
  });
  sock.write('MONITOR\r\n');
  await new Promise<void>((resolve) => {
    const check = () => { if (text.startsWith('+OK\r\n')) { sock.off('data', check); resolve(); } };
    sock.on('data', check);
  });
  const passwords = ['wire-PLAINTEXT-marker', 'pässwörd-wire-marker'];
  await s.create('alice', passwords[0]);
  await s.setPassword('alice', passwords[1]);
  await s.create('ÜNÏCODE', passwords[1]);
  t.true(await verifyPassword((await s.scram('alice', 'SHA-1'))!, 'SHA-1', passwords[1]));
  await s.redis.echo(end);
  await sawEnd;
  const commands = text.split('\r\n').filter((l) => l.startsWith('+') && l.includes('"'));
  const args = commands.flatMap(monitorArgs);
  t.true(commands.some((c) => c.includes('"monitored:acct:alice"')), 'the monitor saw the store at work');
  t.true(args.some((a) => a.equals(Buffer.from('monitored:acct:ünïcode'))), 'escaped UTF-8 is decoded');
  t.true(args.some((a) => a.toString() === end), 'quoted arguments are decoded');
  assertNoPasswords(t, args, passwords, 'the commands sent to Redis');
  assertNoPasswords(t, [Buffer.from(text, 'latin1')], passwords, 'the raw MONITOR output');
});

test('stores opened at the same instant agree on one fake-salt key', async (t) => {
  const stores = await Promise.all(Array.from({ length: 6 }, () => openStore(t, 'salt-race:')));
  const key = stores[0].fakeSaltKey();
  t.is(key.length, 32);
  for (const s of stores) t.deepEqual(s.fakeSaltKey(), key);
  t.deepEqual(await inspector(t).getBuffer('salt-race:scram-fake-salt-key'), key);
  const other = await openStore(t, 'salt-other:');
  t.notDeepEqual(other.fakeSaltKey(), key);
});

test('fromClient uses a borrowed connection and leaves it open', async (t) => {
  const client = inspector(t);
  const s = await RedisAccountStore.fromClient(client, 4096, { namespace: 'borrowed:' });
  t.is(s.redis, client);
  await s.create('alice', 'pw');
  t.true(await (await openStore(t, 'borrowed:')).exists('alice'));
  await s.close();
  await s.close(); // idempotent
  t.is(await client.ping(), 'PONG');
  await t.throwsAsync(RedisAccountStore.fromClient(client, 0), { instanceOf: RangeError });
});

test('close() quits the connection it opened; idempotent', async (t) => {
  const s = await RedisAccountStore.open(server.url, 4096, { namespace: 'closing:' });
  await s.create('alice', 'pw');
  await s.close();
  await s.close();
  t.is(s.redis.status, 'end');
  await t.throwsAsync(s.exists('alice'));
});

test('open() rejects, without hanging, when Redis is not there', async (t) => {
  const url = `redis://127.0.0.1:${await freePort()}`;
  const started = Date.now();
  await t.throwsAsync(RedisAccountStore.open(url, 4096, { connectTimeoutMs: 300 }), { message: /redis not ready within 300 ms/ });
  t.true(Date.now() - started < 2000);
  await t.throwsAsync(RedisAccountStore.open(url, 0), { instanceOf: RangeError });
});

test('losing Redis: every operation rejects at once; all works again once it is back', async (t) => {
  const own = await RedisServer.start(); // stopping the shared one would disturb the other tests
  t.teardown(() => own.destroy());
  const a = await openStore(t, undefined, own.url); // node A
  const b = await openStore(t, undefined, own.url); // node B
  const key = a.fakeSaltKey();
  t.deepEqual(b.fakeSaltKey(), key);
  await a.create('alice', 'pw');
  t.true(await b.exists('alice'));

  await own.stop();
  for (const s of [a, b]) {
    const ops: [string, () => Promise<unknown>][] = [
      ['exists', () => s.exists('alice')],
      ['scram', () => s.scram('alice', 'SHA-256')],
      ['scram of an unknown user', () => s.scram('nobody', 'SHA-1')],
      ['list', () => s.list()],
      ['create', () => s.create('bob', 'pw')],
      ['setPassword', () => s.setPassword('alice', 'pw2')],
      ['remove', () => s.remove('alice')],
    ];
    for (const [name, op] of ops) {
      const started = Date.now();
      const err = await t.throwsAsync(op(), undefined, name);
      t.false(err instanceof AccountExistsError || err instanceof AccountNotFoundError, `${name}: ${err?.message}`);
      t.true(Date.now() - started < 1000, `${name} rejected after ${Date.now() - started} ms`);
    }
  }
  t.deepEqual(a.fakeSaltKey(), key, 'the cached key stays while Redis is away');

  await own.resume(); // empty: no persistence
  await Promise.all([ready(a.redis), ready(b.redis)]);
  t.false(await a.exists('alice'));
  t.deepEqual(await a.list(), []);
  // Both nodes put their common key back: the cluster still agrees on it.
  t.deepEqual(await a.redis.getBuffer('xmpp:scram-fake-salt-key'), key);
  t.is(await b.scram('nobody', 'SHA-256'), undefined);
  t.deepEqual(a.fakeSaltKey(), key);
  t.deepEqual(b.fakeSaltKey(), key);
  await a.create('alice', 'again');
  t.true(await verifyPassword((await b.scram('alice', 'SHA-256'))!, 'SHA-256', 'again'));
  await b.setPassword('alice', 'third');
  t.true(await verifyPassword((await a.scram('alice', 'SHA-1'))!, 'SHA-1', 'third'));
  await t.throwsAsync(b.create('alice', 'x'), { instanceOf: AccountExistsError });
});

test('a Redis that stops answering: commands time out; one in flight when it dies rejects at once', async (t) => {
  const own = await RedisServer.start();
  t.teardown(() => own.destroy());
  const s = await openStore(t, undefined, own.url);
  const admin = inspector(t, own.url);
  await s.create('alice', 'pw');
  // Paused: the server reads commands but answers none (like a hung or cut-off peer).
  await admin.call('CLIENT', 'PAUSE', '20000', 'ALL');
  let started = Date.now();
  await t.throwsAsync(s.exists('alice'), { message: /timed out/ });
  const waited = Date.now() - started;
  t.true(waited >= 1500 && waited < 5000, `timed out after ${waited} ms`);
  // Still paused: this one is on the wire when the server dies.
  const inFlight = t.throwsAsync(s.scram('alice', 'SHA-256'));
  await own.stop();
  started = Date.now();
  await inFlight;
  t.true(Date.now() - started < 1000, `in-flight command rejected after ${Date.now() - started} ms`);
  await own.resume();
  await ready(s.redis);
  t.false(await s.exists('alice')); // the server came back empty
  await s.create('alice', 'pw');
  t.true(await verifyPassword((await s.scram('alice', 'SHA-1'))!, 'SHA-1', 'pw'));
});

test('openAccountStore: Redis when XMPP_REDIS_URL is set, else SQLite in the data directory', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'xmpp-open-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const db1 = `${server.url}/1`; // its own database: the default namespace is used there
  const r = await openAccountStore({ redisUrl: db1, dataDir, scramIterations: 5000, nodeId: 'n1' });
  t.teardown(() => r.close());
  t.true(r instanceof RedisAccountStore);
  t.is(r.iterations, 5000);
  // A name no other test of this file uses in database 0.
  await r.create('opened', 'pw');
  t.is((await r.scram('opened', 'SHA-256'))!.iterations, 5000);
  t.is(await inspector(t, db1).exists('xmpp:acct:opened'), 1);
  t.is(await inspector(t).exists('xmpp:acct:opened'), 0);
  t.false(existsSync(join(dataDir, 'accounts.sqlite')));

  const l = await openAccountStore({ redisUrl: '', dataDir, scramIterations: 4096 });
  t.teardown(() => l.close());
  t.true(l instanceof SqliteAccountStore);
  t.true(existsSync(join(dataDir, 'accounts.sqlite')));
  t.false(await l.exists('opened'));
});
