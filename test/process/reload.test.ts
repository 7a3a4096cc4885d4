// Reloading a running server (SIGHUP, `xmpp-server reload`): what an
// operator changes in the config file, and the certificate files replaced
// under the same paths (a renewal), take effect without a restart for new
// connections; the sessions open go on; what takes a restart is named in
// the log and left as it was; a reload that cannot be applied changes
// nothing and the server goes on.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { RawClient, login } from '../helpers/raw.ts';
import { secured, uid, NS_STREAM } from '../helpers/protocol.ts';
import { selfSigned } from '../helpers/pki.ts';
import { START_MS, STEP_MS, within, environment, spawnServer, run } from '../helpers/process.ts';
import type { Env, ServerProcess } from '../helpers/process.ts';

const NS_REGISTER = 'jabber:iq:register';
const NS_REGISTER_FEATURE = 'http://jabber.org/features/iq-register';

/** A server whose certificate and key are files at fixed paths (named in the environment, which a reload does not read again). */
async function serverWithCertificate(t: ExecutionContext, settings: Record<string, string> = {}): Promise<{ env: Env['env']; dir: string; server: ServerProcess; cert: string; key: string; config: string; replaceCertificate(): void }> {
  const { env, dir } = await environment(t);
  const cert = join(dir, 'server.pem');
  const key = join(dir, 'server.key');
  let n = 0;
  const replaceCertificate = () => {
    const sub = join(dir, `issued-${++n}`);
    mkdirSync(sub);
    const made = selfSigned(sub, 'localhost');
    copyFileSync(made.cert, cert);
    copyFileSync(made.key, key);
  };
  replaceCertificate();
  Object.assign(env, { XMPP_TLS_CERT: cert, XMPP_TLS_KEY: key, ...settings });
  // The level is left to the config file (info by default): set in the environment, no reload could change it.
  delete env.XMPP_LOG_LEVEL;
  const server = spawnServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
  return { env, dir, server, cert, key, config: env.XMPP_CONFIG!, replaceCertificate };
}

async function addUser(t: ExecutionContext, env: NodeJS.ProcessEnv, name: string, password: string): Promise<void> {
  const r = await within(run(process.execPath, ['src/main.ts', 'user', 'add', name, password], env), STEP_MS, 'user add');
  t.is(r.code, 0, r.stderr);
}

/** The SHA-256 fingerprint of the certificate a new direct-TLS connection gets, and of one secured with STARTTLS. */
async function certificatesServed(server: ServerProcess): Promise<{ direct: string; starttls: string }> {
  const d = await within(RawClient.connect(server.tlsPort, { directTls: true }), STEP_MS, 'a direct TLS connection');
  const direct = d.peerCertificate!.fingerprint256;
  d.destroy();
  const { c } = await within(secured(server.c2sPort), STEP_MS, 'a STARTTLS connection');
  const starttls = c.peerCertificate!.fingerprint256;
  c.destroy();
  return { direct, starttls };
}

/** Whether a new stream, secured, offers in-band registration (XEP-0077 §4 stream feature), and registers `name` if asked. */
async function registration(port: number, name?: string): Promise<{ offered: boolean; registered?: string }> {
  const { c, features } = await within(secured(port), STEP_MS, 'a secured stream');
  try {
    const offered = features.getChild('register', NS_REGISTER_FEATURE) !== undefined;
    if (!name) return { offered };
    const id = uid('reg');
    const r = await within(c.request(`<iq type='set' id='${id}'><query xmlns='${NS_REGISTER}'><username>${name}</username><password>${name}-pw</password></query></iq>`, id), STEP_MS, 'the answer to the registration');
    return { offered, registered: r.attrs.type === 'result' ? 'result' : r.toString() };
  } finally {
    c.destroy();
  }
}
const fingerprint = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

test('SIGHUP: a new certificate for new connections, registration and log level switched, open sessions kept, what takes a restart named', async (t) => {
  const { env, server, cert, config, replaceCertificate } = await serverWithCertificate(t);
  await addUser(t, env, 'alice', 'secret');
  const before = await certificatesServed(server);
  t.is(before.direct, before.starttls);
  const old = await within(login(server.c2sPort, 'alice', 'secret', 'old'), STEP_MS, 'alice to log in');
  t.teardown(() => old.c.destroy());
  t.deepEqual(await registration(server.c2sPort), { offered: false }, 'registration is off at start');
  t.false(server.logs.some((l) => l.level === 'debug'), 'nothing at debug level at start (info)');

  // A renewal: new files under the same paths; and the config file edited.
  replaceCertificate();
  const renewed = fingerprint(cert);
  t.not(renewed, before.direct);
  writeFileSync(config, JSON.stringify({ registration: true, logLevel: 'debug', domain: 'example.org', c2sPort: 5999 }));
  const mark = server.logs.length;
  server.child.kill('SIGHUP');
  const reloaded = await within(server.waitForMatch((l) => l.msg === 'configuration reloaded', mark), STEP_MS, 'the reload');
  t.like(reloaded, { level: 'info', certificate: { fingerprint256: renewed } });
  t.deepEqual((reloaded.applied as string[]).sort(), ['XMPP_LOG_LEVEL', 'XMPP_REGISTRATION']);
  // What cannot change without a restart is named; a key the environment sets too is said to be overridden.
  t.like(await server.waitForMatch((l) => l.msg === 'configuration changes that take a restart were not applied', mark), { level: 'warn', settings: ['XMPP_DOMAIN'] });
  t.like(await server.waitForMatch((l) => l.msg.startsWith('config file keys overridden by environment variables'), mark), { level: 'warn', keys: ['c2sPort'] });

  // New connections get the new certificate, over direct TLS and STARTTLS alike.
  const after = await certificatesServed(server);
  t.deepEqual(after, { direct: renewed, starttls: renewed });
  // The session from before goes on, on its connection (and its certificate).
  t.is(old.c.peerCertificate!.fingerprint256, before.direct);
  await within(old.c.exchange(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, /id=(["'])p1\1/), STEP_MS, 'a ping answered on the older session');
  // Registration is on: offered, and an account made in band logs in.
  t.deepEqual(await registration(server.c2sPort, 'bob'), { offered: true, registered: 'result' });
  const bob = await within(login(server.c2sPort, 'bob', 'bob-pw'), STEP_MS, 'bob to log in');
  t.teardown(() => bob.c.destroy());
  // The domain is still the one the server started with.
  const s = await RawClient.connect(server.c2sPort);
  t.teardown(() => s.destroy());
  s.send(`<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='${NS_STREAM}'>`);
  await within(s.waitFor(/<stream:stream [^>]*from=(['"])localhost\1/), STEP_MS, 'the stream header from localhost');
  // Debug level: the main thread and the workers log at it now.
  await within(server.waitForMatch((l) => l.level === 'debug' && l.thread !== 0, mark), STEP_MS, "a worker's debug line");
  t.true(server.running);
  t.deepEqual(server.logs.filter((l) => l.level === 'error'), [], server.transcript());
});

test('a reload that cannot be applied changes nothing, and the server goes on; `reload` on the command line says what it did', async (t) => {
  const { env, dir, server, key, config, replaceCertificate } = await serverWithCertificate(t);
  const served = (await certificatesServed(server)).direct;

  // A config file that is not JSON: refused, logged, nothing changed.
  writeFileSync(config, '{ "registration": true,');
  let mark = server.logs.length;
  server.child.kill('SIGHUP');
  const refused = await within(server.waitForMatch((l) => l.msg === 'reload refused: nothing was changed', mark), STEP_MS, 'the refusal');
  t.like(refused, { level: 'error', signal: 'SIGHUP' });
  t.regex(String(refused.err), /cannot read config file/);
  t.deepEqual(await registration(server.c2sPort), { offered: false });

  // A key that does not match the certificate: refused whole (registration stays off too), the old certificate served.
  writeFileSync(config, JSON.stringify({ registration: true }));
  mkdirSync(join(dir, 'other'));
  const other = selfSigned(join(dir, 'other'), 'localhost');
  copyFileSync(other.key, key);
  mark = server.logs.length;
  server.child.kill('SIGHUP');
  t.like(await within(server.waitForMatch((l) => l.msg === 'reload refused: nothing was changed', mark), STEP_MS, 'the refusal'), { level: 'error' });
  t.deepEqual(await registration(server.c2sPort), { offered: false });
  t.is((await certificatesServed(server)).direct, served);
  t.true(server.running);

  // Fixed: `reload` from the command line applies it and says what it did.
  replaceCertificate();
  const r = await within(run(process.execPath, ['src/main.ts', 'reload'], env), STEP_MS, 'xmpp-server reload');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^reloaded; applied: XMPP_REGISTRATION\ncertificate: CN=localhost, valid to .*, SHA-256 [0-9A-F:]+\n$/);
  t.deepEqual(await registration(server.c2sPort), { offered: true });
  t.not((await certificatesServed(server)).direct, served);

  // No server on that data directory: an error, exit 1.
  const none = await run(process.execPath, ['src/main.ts', 'reload'], { ...env, XMPP_DATA_DIR: join(dir, 'elsewhere') });
  t.is(none.code, 1);
  t.regex(none.stderr, /^error: no server runs on .*elsewhere/);
});

