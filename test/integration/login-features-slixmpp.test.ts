// What a real client asks at login and after (issue 18: profanity's
// "Blocking not supported", poezio's "No remote bookmark storage available",
// aioxmpp's failing PEP, avatar, pubsub, private XML, bookmarks, blocking and
// ad-hoc tests), driven by slixmpp, a third-party library, through its own
// XEP plugins: service discovery, XEP-0191, XEP-0048 in private XML and in
// PEP with XEP-0402 kept in step, XEP-0049, XEP-0054, XEP-0084 with
// XEP-0153/XEP-0398, XEP-0163 with XEP-0115 caps, XEP-0060 on the pubsub
// service, XEP-0050/XEP-0133. The script (peers/login_features.py) prints
// one JSON line per check; each is asserted by name, so a failure names
// itself.
import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { within } from '../helpers/protocol.ts';
import { WAIT } from '../helpers/im.ts';

interface Check {
  check: string;
  ok: boolean;
  detail: unknown;
}

/** Every check the script makes, in its order. */
const CHECKS = [
  'login',
  'disco-server',
  'disco-account',
  'disco-pubsub-service',
  'roster-subscription',
  'vcard-set',
  'vcard-read-other',
  'private-storage',
  'bookmarks-private',
  'bookmarks-private-to-pep',
  'bookmarks-private-to-native',
  'bookmarks-notify-other-resource',
  'bookmarks-pep-to-private',
  'bookmarks-native-to-legacy',
  'pep-tune-notify',
  'pep-nick-notify',
  'pep-mood-notify',
  'avatar-metadata-notify',
  'pep-owner-filtered',
  'avatar-data',
  'avatar-vcard-photo',
  'avatar-presence-hash',
  'pubsub-create-subscribe',
  'pubsub-publish-notify',
  'pubsub-retract-notify',
  'pubsub-purge-notify',
  'pubsub-delete-notify',
  'blocking-block-push',
  'blocking-inbound-refused',
  'blocking-outbound-refused',
  'blocking-unblock',
  'adhoc-admin-commands',
  'adhoc-user-no-admin-commands',
  'adhoc-add-user-login',
  'adhoc-online-users-num',
];

let server: TestServer;
let run: Promise<{ code: number | null; checks: Check[]; err: string }>;

test.before(async () => {
  server = await startTestServer({ XMPP_ADMINS: 'root@localhost' });
  for (const u of ['alice', 'bob', 'root']) await server.addUser(u, `${u}-pw`);
  // One run of the script for the whole file; each test reads its checks.
  const script = fileURLToPath(new URL('./peers/login_features.py', import.meta.url));
  const serverCa = join(server.config.dataDir, 'tls', 'localhost.crt');
  const proc = spawn('/usr/bin/python3', [script, '127.0.0.1', String(server.c2sPort), serverCa, 'localhost', 'alice', 'bob', 'root', 'erin'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', resolve));
  run = within(exited, WAIT * 12, 'the slixmpp clients')
    .finally(() => proc.kill('SIGKILL'))
    .then((code) => ({ code, err, checks: out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Check) }));
  // Not awaited here: a timeout fails the tests, which report it.
  run.catch(() => {});
});
test.after.always(async () => {
  await server?.stop();
});

test('slixmpp makes every check, and exits 0 only when all passed', async (t) => {
  const { code, checks, err } = await run;
  t.deepEqual(checks.map((c) => c.check), CHECKS, 'the checks the script made');
  const failed = checks.filter((c) => !c.ok);
  t.is(code, failed.length ? 1 : 0, err);
});

for (const name of CHECKS) {
  test(`slixmpp: ${name}`, async (t) => {
    const { checks } = await run;
    const c = checks.find((x) => x.check === name);
    t.truthy(c, `${name} was not made`);
    t.true(c?.ok, `${name}: ${JSON.stringify(c?.detail)}`);
  });
}
