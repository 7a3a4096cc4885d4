// The account commands as a user runs them: `xmpp-server user ...` in its
// own process, against a data directory, judged by exit code and output.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { verifyPassword, SCRAM_HASHES } from '../../src/accounts/store.ts';
import { openAccountStore } from '../../src/accounts/open.ts';
import { openRosterStore } from '../../src/roster/open.ts';
import { openOfflineStore } from '../../src/offline/open.ts';
import { SETTINGS, pathRules } from '../../src/config/index.ts';
import { startTestServer } from '../helpers/server.ts';
import { NS_SASL, b64, scramClient, secured, within } from '../helpers/protocol.ts';
import { START_MS, spawnServer } from '../helpers/process.ts';
import { login } from '../helpers/raw.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Cli {
  /** The temporary directory holding the rest. */
  dir: string;
  dataDir: string;
  /** The config file the runs name (XMPP_CONFIG): `{}` unless a test rewrites it. */
  config: string;
  /** The environment of the runs. */
  env: NodeJS.ProcessEnv;
  /** Creates the stores in the data directory with the server's own openers, as its start does. */
  init(): Promise<void>;
  run(args: string[], opts?: { stdin?: string; env?: Record<string, string | undefined>; cwd?: string }): Promise<Result>;
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
    dir,
    dataDir,
    config,
    env: base,
    async init() {
      const where = { redisUrl: '', dataDir, scramIterations: 4096 };
      for (const store of [await openAccountStore(where), await openRosterStore(where), await openOfflineStore(where)]) await store.close();
    },
    run(args, opts = {}) {
      return new Promise((resolve, reject) => {
        const env = { ...base, ...opts.env };
        for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
        const child = spawn(process.execPath, [join(ROOT, 'src/main.ts'), ...args], { cwd: opts.cwd ?? ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
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
  await c.init();

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
  await c.init();
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
  await c.init();
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
  await c.init();
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
  t.false(existsSync(c.dataDir), 'nothing was created');
});

test('the config file named by XMPP_CONFIG is read', async (t) => {
  const c = cli(t);
  await c.init();
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
  // A server on that data directory, itself at the default count: what it
  // announces can only come from what `user add` stored. It creates the
  // store at its start, and the accounts are added while it runs.
  const server = await startTestServer({ XMPP_DATA_DIR: c.dataDir });
  t.teardown(() => server.stop());
  t.is(server.config.scramIterations, 4096);
  t.is((await c.run(['user', 'add', 'ivan', 'ivan-pw'], { env: { XMPP_SCRAM_ITERATIONS: '5000' } })).code, 0);
  t.is((await c.run(['user', 'add', 'judy', 'judy-pw'])).code, 0);
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

const USAGE = /^usage: xmpp-server <command>\n[\s\S]*user add <name> \[password\]/;

test('usage errors exit 2 and print the usage on stderr, before anything is opened', async (t) => {
  const c = cli(t);
  for (const args of [['user'], ['user', 'add'], ['user', 'frobnicate'], ['user', 'toString'], ['user', 'list', 'extra'], ['user', 'remove'], ['user', 'add', 'a', 'b', 'c'], ['frobnicate'], ['start', 'now'], ['config', 'x'], ['--version']]) {
    const r = await c.run(args);
    t.is(r.code, 2, args.join(' '));
    t.is(r.stdout, '', args.join(' '));
    t.regex(r.stderr, USAGE, args.join(' '));
  }
  t.false(existsSync(c.dataDir), 'nothing was created');
});

test('--help, -h and help print the usage on stdout and exit 0, also for a subcommand', async (t) => {
  const c = cli(t);
  for (const args of [['--help'], ['-h'], ['help'], ['user', '--help'], ['user', '-h'], ['user', 'help'], ['user', 'add', '--help'], ['user', 'list', '-h'], ['start', '--help'], ['config', '-h']]) {
    const r = await c.run(args);
    t.is(r.code, 0, args.join(' '));
    t.is(r.stderr, '', args.join(' '));
    t.regex(r.stdout, USAGE, args.join(' '));
  }
  // Help needs no configuration, let alone a valid one.
  const r = await c.run(['--help'], { env: { XMPP_C2S_PORT: 'abc' } });
  t.is(r.code, 0);
  t.false(existsSync(c.dataDir), 'nothing was created');
});

test('`config` lists every setting with its environment variable, then how relative paths resolve', async (t) => {
  const c = cli(t);
  const r = await c.run(['config']);
  t.is(r.code, 0);
  const lines = r.stdout.trimEnd().split('\n');
  SETTINGS.forEach((s, i) => t.true(lines[i].startsWith(`${s.env} `) && lines[i].includes(` ${s.key} `), lines[i]));
  t.deepEqual(lines.slice(SETTINGS.length), ['', ...pathRules()]);
  t.regex(lines.slice(SETTINGS.length).join(' '), new RegExp(`against ${ROOT.replace(/\/$/, '')},`));
});

test('an unknown XMPP_ variable is a configuration error naming it, with the closest setting', async (t) => {
  const c = cli(t);
  for (const args of [['user', 'list'], ['start']]) {
    t.deepEqual(await c.run(args, { env: { XMPP_DOMIAN: 'example.org' } }), {
      code: 78,
      stdout: '',
      stderr: 'configuration error: unknown environment variable XMPP_DOMIAN (did you mean XMPP_DOMAIN?); `config` lists the settings\n',
    }, args.join(' '));
  }
  t.false(existsSync(c.dataDir), 'nothing was created');
});

test('without an account database the user commands exit 1, say where they looked, and create nothing', async (t) => {
  const c = cli(t);
  const where = join(c.dataDir, 'accounts.sqlite');
  for (const args of [['user', 'add', 'alice', 'pw-123456'], ['user', 'add', 'alice'], ['user', 'passwd', 'alice', 'pw-123456'], ['user', 'remove', 'alice'], ['user', 'list']]) {
    const r = await c.run(args, { stdin: 'pw-from-stdin\n' });
    t.is(r.code, 1, args.join(' '));
    t.is(r.stdout, '', args.join(' '));
    t.is(r.stderr, `error: no account database at ${where}. The server creates it when it starts (npm start); if the server uses another data directory, set XMPP_DATA_DIR (or "dataDir" in the config file) to it\n`, args.join(' '));
  }
  t.false(existsSync(c.dataDir), 'nothing was created');
  // An existing data directory without the database is no different.
  mkdirSync(c.dataDir);
  t.is((await c.run(['user', 'add', 'alice', 'pw-123456'])).code, 1);
  t.deepEqual(readdirSync(c.dataDir), []);
});

test('user remove takes the roster and offline messages along, and works without them', async (t) => {
  const c = cli(t);
  await c.init();
  t.is((await c.run(['user', 'add', 'alice', 'pw-123456'])).code, 0);
  const where = { redisUrl: '', dataDir: c.dataDir };
  const roster = await openRosterStore(where);
  await roster.set('alice', { jid: 'bob@localhost', name: 'Bob', groups: [] }, 100);
  await roster.close();
  const offline = await openOfflineStore(where);
  await offline.push('alice', '<message/>', { max: 10, maxBytes: 1000 });
  await offline.close();
  t.deepEqual(await c.run(['user', 'remove', 'alice']), { code: 0, stdout: 'removed alice@localhost\n', stderr: '' });
  const after = { roster: await openRosterStore(where), offline: await openOfflineStore(where) };
  t.deepEqual((await after.roster.get('alice')).items, []);
  t.is(await after.offline.count('alice'), 0);
  await after.roster.close();
  await after.offline.close();

  // Only the account database: nothing else to remove, and nothing created.
  rmSync(join(c.dataDir, 'roster.sqlite'));
  rmSync(join(c.dataDir, 'offline.sqlite'));
  t.is((await c.run(['user', 'add', 'bob', 'pw-123456'])).code, 0);
  t.deepEqual(await c.run(['user', 'remove', 'bob']), { code: 0, stdout: 'removed bob@localhost\n', stderr: '' });
  t.false(existsSync(join(c.dataDir, 'roster.sqlite')) || existsSync(join(c.dataDir, 'offline.sqlite')));
});

test('relative data paths resolve the same for the server and the CLI, whatever their working directory', async (t) => {
  const c = cli(t);
  const elsewhere = join(c.dir, 'elsewhere');
  mkdirSync(elsewhere);
  // From the environment: relative to the installation directory. The
  // server runs from one directory, the CLI from others.
  const env = { ...c.env, XMPP_DATA_DIR: relative(ROOT, c.dataDir), XMPP_CONFIG: relative(ROOT, c.config), XMPP_C2S_PORT: '0', XMPP_TLS_PORT: '0', XMPP_WORKERS: '1', XMPP_LOG_LEVEL: 'info' };
  t.false(env.XMPP_DATA_DIR.startsWith('/'));
  const server = spawnServer(t, process.execPath, [join(ROOT, 'src/main.ts'), 'start'], env, elsewhere);
  const { c2sPort } = await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
  t.true(existsSync(join(c.dataDir, 'accounts.sqlite')), 'the server created its store there');
  t.deepEqual(await c.run(['user', 'add', 'alice', 'alice-pw'], { env, cwd: '/' }), { code: 0, stdout: 'added alice@localhost\n', stderr: '' });
  t.deepEqual(await c.run(['user', 'list'], { env, cwd: elsewhere }), { code: 0, stdout: 'alice@localhost\n', stderr: '' });
  const { c: x, jid } = await within(login(c2sPort as number, 'alice', 'alice-pw'), 15_000, 'alice to log in');
  t.teardown(() => x.destroy());
  t.is(jid, 'alice@localhost/raw');
  t.deepEqual(readdirSync(elsewhere), [], 'nothing in the working directory');
  server.child.kill('SIGTERM');
  t.deepEqual(await within(server.closed, START_MS, 'the server to exit'), { code: 0, signal: null }, server.transcript());

  // From the config file: relative to the file's directory, here the same data directory.
  writeFileSync(c.config, '{"dataDir": "data"}\n');
  for (const cwd of ['/', elsewhere, ROOT]) {
    t.deepEqual(await c.run(['user', 'list'], { env: { XMPP_DATA_DIR: undefined }, cwd }), { code: 0, stdout: 'alice@localhost\n', stderr: '' }, cwd);
  }
});

/**
 * Runs the command on a pseudo-terminal (python3's pty module relays it):
 * `type` waits for the text, then types; the output is all the terminal showed.
 */
const PTY = `
import os, pty, select, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
inputs = [fd, 0]
while True:
    ready = select.select(inputs, [], [])[0]
    if 0 in ready:
        data = os.read(0, 1024)
        if data:
            os.write(fd, data)
        else:
            inputs.remove(0)
    if fd in ready:
        try:
            data = os.read(fd, 1024)
        except OSError:
            data = b''
        if not data:
            break
        os.write(1, data)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
`;

function onTerminal(c: Cli, args: string[]) {
  const child = spawn('python3', ['-c', PTY, process.execPath, join(ROOT, 'src/main.ts'), ...args], { cwd: ROOT, env: c.env, stdio: ['pipe', 'pipe', 'inherit'] });
  let shown = '';
  const waiters: (() => void)[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    shown += d;
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => {
    for (const w of waiters.splice(0)) w();
    resolve(code);
  }));
  let from = 0;
  return {
    get shown() {
      return shown;
    },
    exited,
    /** Waits until `prompt` is shown (after what was waited for before), then types `keys`. */
    async type(prompt: string, keys: string) {
      while (!shown.includes(prompt, from)) {
        if (child.exitCode !== null) throw new Error(`exited before showing ${JSON.stringify(prompt)}: ${JSON.stringify(shown)}`);
        await new Promise<void>((r) => waiters.push(r));
      }
      from = shown.indexOf(prompt, from) + prompt.length;
      child.stdin.write(keys);
    },
    kill: () => child.kill('SIGKILL'),
  };
}

test('on a terminal the password is asked twice and never shown; a mismatch is an error', async (t) => {
  const c = cli(t);
  await c.init();
  const ok = onTerminal(c, ['user', 'add', 'tina']);
  t.teardown(() => ok.kill());
  await within(ok.type('password: ', 'Typed-Secret-7Kq\r'), 15_000, 'the first prompt');
  await within(ok.type('password again: ', 'Typed-Secret-7Kq\r'), 15_000, 'the second prompt');
  t.is(await within(ok.exited, 15_000, 'the CLI to exit'), 0, ok.shown);
  t.regex(ok.shown, /added tina@localhost/);
  t.false(ok.shown.includes('Typed-Secret'), `echoed: ${JSON.stringify(ok.shown)}`);
  t.deepEqual(await accepts(c.dataDir, 'tina', 'Typed-Secret-7Kq'), [true, true]);

  const typo = onTerminal(c, ['user', 'passwd', 'tina']);
  t.teardown(() => typo.kill());
  await within(typo.type('password: ', 'New-Secret-1\r'), 15_000, 'the first prompt');
  await within(typo.type('password again: ', 'New-Secret-2\r'), 15_000, 'the second prompt');
  t.is(await within(typo.exited, 15_000, 'the CLI to exit'), 1, typo.shown);
  t.regex(typo.shown, /error: the passwords do not match/);
  t.false(typo.shown.includes('New-Secret'), `echoed: ${JSON.stringify(typo.shown)}`);
  t.deepEqual(await accepts(c.dataDir, 'tina', 'Typed-Secret-7Kq'), [true, true], 'the password is unchanged');
});
