// deploy/xmpp-server.service as an operator installs it: systemd itself
// (systemd-analyze verify) accepts the unit once the repository's path is
// put in for /opt/xmpp-server, its ExecStart names the server's entry point
// in the Node.js 26 that `npm ci` brings, and the settings it sets are
// settings the server knows and accepts.
import test from 'ava';
import { execFile } from 'node:child_process';
import { SETTINGS, loadConfig } from '../../src/config/index.ts';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const UNIT = readFileSync(join(ROOT, 'deploy/xmpp-server.service'), 'utf8');
const INSTALLED = '/opt/xmpp-server';

/** The values of `key=` lines of the unit, in order. */
const values = (key: string) => UNIT.split('\n').flatMap((l) => (l.startsWith(`${key}=`) ? [l.slice(key.length + 1)] : []));

test('systemd-analyze verify accepts the unit, installed where the repository is', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'xmpp-server.service');
  writeFileSync(file, UNIT.replaceAll(INSTALLED, ROOT));
  const { stderr } = await run('systemd-analyze', ['verify', file]);
  t.is(stderr.trim(), '', 'no warning');
});

test("ExecStart runs the server directly (not npm) with the Node.js 26 of the install, from WorkingDirectory", (t) => {
  const [exec] = values('ExecStart');
  const [cwd] = values('WorkingDirectory');
  t.is(cwd, INSTALLED);
  const [bin, ...args] = exec.split(' ');
  t.is(bin, `${INSTALLED}/node_modules/.bin/node`);
  t.deepEqual(args, ['src/main.ts', 'start']);
  t.true(existsSync(join(ROOT, 'node_modules/.bin/node')) && existsSync(join(ROOT, args[0])), 'both in the repository');
});

test("the unit's settings are the server's and valid: loadConfig, as the server's start, takes them and they are in force", (t) => {
  const env: Record<string, string> = {};
  for (const v of values('Environment')) {
    const at = v.indexOf('=');
    env[v.slice(0, at)] = v.slice(at + 1);
  }
  t.true(Object.keys(env).length > 0 && Object.keys(env).every((k) => k.startsWith('XMPP_')));
  const config = loadConfig(env) as unknown as Record<string, unknown>;
  for (const [k, v] of Object.entries(env)) {
    const setting = SETTINGS.find((s) => s.env === k);
    if (!setting) return t.fail(`${k} is no setting`);
    t.is(String(config[setting.key]), v, `${k}=${v} in force`);
  }
});
