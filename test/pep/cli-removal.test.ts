// `user remove` from the CLI takes the account's PEP nodes and items along
// (accounts/removal.ts), and works where no PEP store was ever made.
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openAccountStore } from '../../src/accounts/open.ts';
import { openPepStore } from '../../src/pep/open.ts';
import { DEFAULT_CONFIG, MAX_NODES } from '../../src/pep/store.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function run(dataDir: string, config: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('XMPP_')) env[k] = v;
  Object.assign(env, { XMPP_CONFIG: config, XMPP_DATA_DIR: dataDir });
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'src/main.ts'), ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('user remove takes the PEP nodes along, and makes no PEP store where there was none', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-pep-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'xmpp.config.json');
  writeFileSync(config, '{}\n');
  const dataDir = join(dir, 'data');
  const where = { redisUrl: '', dataDir, scramIterations: 4096 };
  await (await openAccountStore(where)).close();
  t.is((await run(dataDir, config, ['user', 'add', 'alice', 'pw-123456'])).code, 0);
  t.is((await run(dataDir, config, ['user', 'add', 'bob', 'pw-123456'])).code, 0);
  const pep = await openPepStore(where);
  await pep.publish('alice', 'urn:test', { id: 'i', xml: '<x xmlns="urn:test"/>' }, DEFAULT_CONFIG, MAX_NODES);
  await pep.publish('bob', 'urn:test', { id: 'i', xml: '<x xmlns="urn:test"/>' }, DEFAULT_CONFIG, MAX_NODES);
  await pep.close();
  t.deepEqual(await run(dataDir, config, ['user', 'remove', 'alice']), { code: 0, stdout: 'removed alice@localhost\n', stderr: '' });
  const after = await openPepStore(where);
  t.deepEqual(await after.nodes('alice'), []);
  t.is((await after.nodes('bob')).length, 1, "another's stay");
  await after.close();
  rmSync(join(dataDir, 'pep.sqlite'));
  t.deepEqual(await run(dataDir, config, ['user', 'remove', 'bob']), { code: 0, stdout: 'removed bob@localhost\n', stderr: '' });
  t.false(existsSync(join(dataDir, 'pep.sqlite')));
});
