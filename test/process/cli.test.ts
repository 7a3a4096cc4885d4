// The account commands as a user runs them: `xmpp-server user ...` in its
// own process, against a data directory, judged by exit code and output.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { verifyPassword, SCRAM_HASHES } from '../../src/accounts/store.ts';
import { SETTINGS } from '../../src/config/index.ts';
import { startTestServer } from '../helpers/server.ts';
import { NS_SASL, b64, scramClient, secured, within } from '../helpers/protocol.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Cli {
  dataDir: string;
  /** The config file the runs name (XMPP_CONFIG): `{}` unless a test rewrites it. */
  config: string;
  run(args: string[], opts?: { stdin?: string; env?: Record<string, string> }): Promise<Result>;
}

/**
 * A fresh data directory and a runner for `node src/main.ts ...` on this
 * Node (process.execPath: the test already runs on the project's Node 26).
 * Inherited XMPP_ variables are dropped and an empty config file is named,
 * so the developer's shell or an xmpp.config.json cannot change the outcome.
 */
function cli(t: ExecutionContext): Cli {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'xmpp.config.json');
  writeFileSync(config, '{}\n');
  const dataDir = join(dir, 'data');
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('XMPP_')) base[k] = v;
  Object.assign(base, { XMPP_CONFIG: config, XMPP_DATA_DIR: dataDir });
  return {
    dataDir,
    config,
    run(args, opts = {}) {
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ['src/main.ts', ...args], { cwd: ROOT, env: { ...base, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.on('error', reject);
        child.on('close', (code) => resolve({ code, stdout, stderr }));
        child.stdin.end(opts.stdin ?? '');
      });
    },
  };
}

/** Whether `password` is accepted for `user` by the store the server reads (both SCRAM hashes). */
async function accepts(dataDir: string, user: string, password: string): Promise<boolean[]> {
  const store = SqliteAccountStore.open(join(dataDir, 'accounts.sqlite'), 4096);
  try {
    return await Promise.all(
      SCRAM_HASHES.map(async (h) => {
        const creds = await store.scram(user, h);
        return creds !== undefined && (await verifyPassword(creds, h, password));
      }),
    );
  } finally {
    store.close();
  }
}

/** Every byte the data directory holds (database, WAL, certificate, ...). */
function allBytes(dir: string): Buffer {
  return Buffer.concat(
    readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => readFileSync(join(e.parentPath, e.name))),
  );
}

test('user add, list, passwd and remove, end to end', async (t) => {
  const c = cli(t);

  t.deepEqual(await c.run(['user', 'add', 'alice', 'first-password']), { code: 0, stdout: 'added alice@localhost\n', stderr: '' });
  t.deepEqual(await c.run(['user', 'list']), { code: 0, stdout: 'alice@localhost\n', stderr: '' });
  t.deepEqual(await accepts(c.dataDir, 'alice', 'first-password'), [true, true]);

  // The same account again, also when spelled differently (localparts are case-folded).
  for (const name of ['alice', 'Alice']) {
    t.deepEqual(await c.run(['user', 'add', name, 'other-password']), { code: 1, stdout: '', stderr: 'error: account alice already exists\n' }, name);
  }
  t.deepEqual(await accepts(c.dataDir, 'alice', 'first-password'), [true, true], 'a failed add leaves the account alone');

  t.deepEqual(await c.run(['user', 'passwd', 'alice', 'second-password']), { code: 0, stdout: 'changed the password of alice@localhost\n', stderr: '' });
  t.deepEqual(await accepts(c.dataDir, 'alice', 'second-password'), [true, true]);
  t.deepEqual(await accepts(c.dataDir, 'alice', 'first-password'), [false, false]);

  t.deepEqual(await c.run(['user', 'passwd', 'bob', 'x-password']), { code: 1, stdout: '', stderr: 'error: no account bob\n' });

  t.deepEqual(await c.run(['user', 'add', 'bob', 'bob-password']), { code: 0, stdout: 'added bob@localhost\n', stderr: '' });
  t.deepEqual(await c.run(['user', 'list']), { code: 0, stdout: 'alice@localhost\nbob@localhost\n', stderr: '' });

  t.deepEqual(await c.run(['user', 'remove', 'alice']), { code: 0, stdout: 'removed alice@localhost\n', stderr: '' });
  t.deepEqual(await c.run(['user', 'list']), { code: 0, stdout: 'bob@localhost\n', stderr: '' });
  t.deepEqual(await accepts(c.dataDir, 'alice', 'second-password'), [false, false]);
  t.deepEqual(await c.run(['user', 'remove', 'alice']), { code: 1, stdout: '', stderr: 'error: no account alice\n' });
});

test('the password is read from stdin when not given', async (t) => {
  const c = cli(t);
  t.deepEqual(await c.run(['user', 'add', 'carol'], { stdin: 'from stdin 1\n' }), { code: 0, stdout: 'added carol@localhost\n', stderr: '' });
  t.deepEqual(await accepts(c.dataDir, 'carol', 'from stdin 1'), [true, true]);
  t.deepEqual(await c.run(['user', 'passwd', 'carol'], { stdin: 'from stdin 2\n' }), { code: 0, stdout: 'changed the password of carol@localhost\n', stderr: '' });
  t.deepEqual(await accepts(c.dataDir, 'carol', 'from stdin 2'), [true, true]);
  // No password at all is an error, not an empty password.
  const none = await c.run(['user', 'add', 'dave']);
  t.is(none.code, 1);
  t.is(none.stderr, 'error: no password given\n');
});

test('invalid usernames are rejected with a clear message and create nothing', async (t) => {
  const c = cli(t);
  for (const name of ['al ice', 'al@ice', 'alice/home', 'a:b', '<x>', "o'brien"]) {
    const r = await c.run(['user', 'add', name, 'some-password']);
    t.is(r.code, 1, name);
    t.is(r.stdout, '', name);
    const why = name === 'al ice' ? 'U+0020 is not allowed in an identifier' : 'contains a forbidden character';
    t.is(r.stderr, `error: invalid username ${JSON.stringify(name)}: ${why}\n`, name);
  }
  t.deepEqual(await c.run(['user', 'list']), { code: 0, stdout: '', stderr: '' });
});

test('the database holds SCRAM verifiers, never a password', async (t) => {
  const c = cli(t);
  const passwords = ['Plaintext-Canary-One-7Q2x', 'Plaintext-Canary-Two-9Zk4', 'Plaintext-Canary-Three-3Hh8'];
  t.is((await c.run(['user', 'add', 'erin', passwords[0]])).code, 0);
  t.is((await c.run(['user', 'passwd', 'erin', passwords[1]])).code, 0);
  t.is((await c.run(['user', 'add', 'frank'], { stdin: `${passwords[2]}\n` })).code, 0);
  t.deepEqual(await accepts(c.dataDir, 'frank', passwords[2]), [true, true]);

  const bytes = allBytes(c.dataDir);
  // The scan does see text that is stored: the usernames are there.
  t.true(bytes.includes('erin') && bytes.includes('frank'), 'the usernames should be readable in the data directory');
  for (const p of passwords) {
    for (const encoding of ['utf8', 'utf16le', 'latin1'] as const) t.false(bytes.includes(Buffer.from(p, encoding)), `${p} found as ${encoding}`);
    t.false(bytes.includes(Buffer.from(p).toString('base64')), `${p} found as base64`);
    t.false(bytes.includes(Buffer.from(p).toString('hex')), `${p} found as hex`);
  }
});

test('a configuration error exits non-zero and names the variable', async (t) => {
  const c = cli(t);
  for (const args of [['user', 'list'], ['user', 'add', 'alice', 'pw-123456'], ['start']]) {
    const r = await c.run(args, { env: { XMPP_C2S_PORT: 'abc' } });
    t.is(r.code, 78, args.join(' ')); // EX_CONFIG
    t.is(r.stdout, '');
    t.is(r.stderr, 'configuration error: environment variable XMPP_C2S_PORT must be a whole number, got "abc"\n');
  }
  t.deepEqual(await c.run(['user', 'list']), { code: 0, stdout: '', stderr: '' }, 'nothing was created');
});

test('the config file named by XMPP_CONFIG is read', async (t) => {
  const c = cli(t);
  writeFileSync(c.config, '{"domain": "example.test"}\n');
  t.deepEqual(await c.run(['user', 'add', 'alice', 'pw-123456']), { code: 0, stdout: 'added alice@example.test\n', stderr: '' });
});

test('a config file with an unknown key or an invalid value exits 78 and names the key', async (t) => {
  const c = cli(t);
  for (const [contents, message] of [
    ['{"bogus": 1}\n', `config file ${c.config}: unknown key "bogus"`],
    ['{"c2sPort": "x"}\n', 'config file key "c2sPort" must be a whole number, got "x"'],
  ]) {
    writeFileSync(c.config, contents);
    for (const args of [['user', 'list'], ['user', 'add', 'alice', 'pw-123456'], ['start']]) {
      t.deepEqual(await c.run(args), { code: 78, stdout: '', stderr: `configuration error: ${message}\n` }, `${contents.trim()}: ${args.join(' ')}`); // EX_CONFIG
    }
  }
  t.false(existsSync(c.dataDir), 'nothing was created');
});

test('a missing or unparsable config file exits 78 and names the file', async (t) => {
  const c = cli(t);
  const missing = join(dirname(c.config), 'missing.json');
  const r = await c.run(['start'], { env: { XMPP_CONFIG: missing } });
  t.is(r.code, 78);
  t.is(r.stdout, '');
  t.true(r.stderr.startsWith(`configuration error: cannot read config file ${missing}: ENOENT`), r.stderr);
  t.is(r.stderr.split('\n').length, 2, 'one line');

  writeFileSync(c.config, '{"c2sPort": 5222,\n');
  const bad = await c.run(['start']);
  t.is(bad.code, 78);
  t.is(bad.stdout, '');
  t.true(bad.stderr.startsWith(`configuration error: cannot read config file ${c.config}: `), bad.stderr);
  t.regex(bad.stderr, /JSON/);
  t.is(bad.stderr.split('\n').length, 2, 'one line');
  t.false(existsSync(c.dataDir), 'nothing was created');

  for (const json of ['null', '"x"', '[1]', '7']) {
    writeFileSync(c.config, `${json}\n`);
    const notObject = await c.run(['start']);
    t.is(notObject.code, 78, json);
    t.is(notObject.stderr, `configuration error: config file ${c.config} must hold a JSON object of settings, got ${json}\n`);
  }
  t.false(existsSync(c.dataDir), 'nothing was created');
});

test('XMPP_SCRAM_ITERATIONS at `user add` is the count the server announces in SCRAM-SHA-1 and SCRAM-SHA-256', async (t) => {
  const c = cli(t);
  t.is((await c.run(['user', 'add', 'ivan', 'ivan-pw'], { env: { XMPP_SCRAM_ITERATIONS: '5000' } })).code, 0);
  t.is((await c.run(['user', 'add', 'judy', 'judy-pw'])).code, 0);
  // A server on that data directory, itself at the default count: what it
  // announces can only come from what `user add` stored.
  const server = await startTestServer({ XMPP_DATA_DIR: c.dataDir });
  t.teardown(() => server.stop());
  t.is(server.config.scramIterations, 4096);
  for (const [mech, hash] of [['SCRAM-SHA-1', 'sha1'], ['SCRAM-SHA-256', 'sha256']] as const) {
    for (const [user, iterations] of [['ivan', 5000], ['judy', 4096]] as const) {
      const what = `${mech} for ${user}`;
      const { c: x } = await within(secured(server.c2sPort), 15_000, `${what}: STARTTLS`);
      t.teardown(() => x.destroy());
      const clientFirstBare = `n=${user},r=${randomBytes(18).toString('base64')}`;
      x.send(`<auth xmlns='${NS_SASL}' mechanism='${mech}'>${b64(`n,,${clientFirstBare}`)}</auth>`);
      const serverFirst = Buffer.from((await within(x.nextEl('challenge'), 15_000, `${what}: challenge`)).getText(), 'base64').toString();
      const { attrs, clientFinal, serverSignature } = scramClient(hash, `${user}-pw`, clientFirstBare, serverFirst, 'n,,');
      t.is(attrs.i, String(iterations), `${what}: ${serverFirst}`);
      // And the password verifies at that count, both ways.
      x.send(`<response xmlns='${NS_SASL}'>${b64(clientFinal)}</response>`);
      const ok = await within(x.nextEl('success'), 15_000, `${what}: success`);
      t.is(Buffer.from(ok.getText(), 'base64').toString(), `v=${serverSignature.toString('base64')}`, what);
      x.destroy();
    }
  }
});

test('usage errors exit 2 and print the usage', async (t) => {
  const c = cli(t);
  for (const args of [['user'], ['user', 'add'], ['user', 'frobnicate'], ['frobnicate']]) {
    const r = await c.run(args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, /^usage: xmpp-server <command>\n[\s\S]*user add <name> \[password\]/, args.join(' '));
  }
});

test('`config` lists every setting with its environment variable', async (t) => {
  const c = cli(t);
  const r = await c.run(['config']);
  t.is(r.code, 0);
  const lines = r.stdout.trimEnd().split('\n');
  t.is(lines.length, SETTINGS.length);
  SETTINGS.forEach((s, i) => t.true(lines[i].startsWith(`${s.env} `) && lines[i].includes(` ${s.key} `), lines[i]));
});
