// The data directory holds password hashes, rosters, offline messages and
// the TLS key: the server and the CLI create it, and everything in it, for
// their user only, whatever the umask; what is more open is reported at start.
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync, watch } from 'node:fs';
import { join } from 'node:path';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { START_MS, STEP_MS, ROOT, within, environment, spawnServer } from '../helpers/process.ts';

/** Runs the command with umask 000: whatever is not created with an explicit mode comes out open to all. */
const UMASK_0 = ['-c', 'umask 000 && exec "$@"', 'sh', process.execPath, 'src/main.ts'];

const mode = (path: string) => `0${(statSync(path).mode & 0o777).toString(8)}`;

/** Every entry of the directory (itself included), by path relative to it, with its mode. */
function modes(dir: string): Record<string, string> {
  const out: Record<string, string> = { '.': mode(dir) };
  for (const name of readdirSync(dir, { recursive: true }) as string[]) out[name] = mode(join(dir, name));
  return out;
}

const OPEN_MSG = 'data directory entry open to other users';

test('the server creates the data directory 0700 and every file in it 0600, even with umask 000', async (t) => {
  const { env } = await environment(t);
  const dataDir = env.XMPP_DATA_DIR!;
  const server = spawnServer(t, 'sh', [...UMASK_0, 'start'], env);
  await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
  const seen = modes(dataDir);
  // What there is to check: the three databases with their WAL files (open
  // while the server runs), the certificate and its key.
  for (const db of ['accounts', 'roster', 'offline']) {
    for (const suffix of ['', '-wal', '-shm']) t.true(`${db}.sqlite${suffix}` in seen, `${db}.sqlite${suffix}: ${JSON.stringify(seen)}`);
  }
  t.true(join('tls', 'localhost.key') in seen && join('tls', 'localhost.crt') in seen, JSON.stringify(seen));
  for (const [path, m] of Object.entries(seen)) {
    t.is(m, statSync(join(dataDir, path)).isDirectory() ? '0700' : '0600', path);
  }
  t.deepEqual(server.logs.filter((l) => l.msg === OPEN_MSG), [], 'nothing to warn about');
  server.child.kill('SIGTERM');
  t.deepEqual(await within(server.closed, START_MS, 'the server to exit'), { code: 0, signal: null }, server.transcript());
});

test('the CLI opens the store without creating anything more open, even with umask 000', async (t) => {
  const { env } = await environment(t);
  const dataDir = env.XMPP_DATA_DIR!;
  // The store as the server creates it.
  SqliteAccountStore.open(join(dataDir, 'accounts.sqlite'), 4096).close();
  const wal = join(dataDir, 'accounts.sqlite-wal');
  const shm = join(dataDir, 'accounts.sqlite-shm');
  t.false(existsSync(wal) || existsSync(shm), 'closed: no WAL files yet');

  // `user add` opens the store, then waits for the password on stdin: the
  // files it created are there to be looked at until it gets one.
  const watcher = watch(dataDir);
  t.teardown(() => watcher.close());
  const created = new Promise<void>((resolve) => {
    const check = () => {
      if (existsSync(wal) && existsSync(shm)) resolve();
    };
    watcher.on('change', check);
    check();
  });
  const cli = spawn('sh', [...UMASK_0, 'user', 'add', 'alice'], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => cli.kill('SIGKILL'));
  let out = '';
  cli.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  cli.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => cli.on('close', resolve));
  await within(created, STEP_MS, 'the CLI to open the database');
  t.is(mode(wal), '0600');
  t.is(mode(shm), '0600');
  cli.stdin.end('alice-password\n');
  t.is(await within(exited, STEP_MS, 'the CLI to exit'), 0, out);
  t.is(out, 'added alice@localhost\n');
  for (const [path, m] of Object.entries(modes(dataDir))) t.is(m, path === '.' ? '0700' : '0600', path);
});

test('at start, the server warns once for each entry of the data directory open to others', async (t) => {
  const { env } = await environment(t);
  const dataDir = env.XMPP_DATA_DIR!;
  mkdirSync(dataDir);
  chmodSync(dataDir, 0o755);
  const accounts = join(dataDir, 'accounts.sqlite');
  SqliteAccountStore.open(accounts, 4096).close();
  chmodSync(accounts, 0o644);
  const server = spawnServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
  const warned = server.logs.filter((l) => l.msg === OPEN_MSG).map(({ level, path, mode, expected }) => ({ level, path, mode, expected }));
  t.deepEqual(warned, [
    { level: 'warn', path: dataDir, mode: '0755', expected: '0700' },
    { level: 'warn', path: accounts, mode: '0644', expected: '0600' },
  ], server.transcript());
  // Reported, not changed: the operator decides.
  t.is(mode(dataDir), '0755');
  server.child.kill('SIGTERM');
  t.deepEqual(await within(server.closed, START_MS, 'the server to exit'), { code: 0, signal: null }, server.transcript());
});
