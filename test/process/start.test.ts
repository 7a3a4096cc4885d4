// The server as a user runs it: the README's `npm start`, and the node
// process it starts, driven from outside through ports, logs and signals.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { RawClient, header, login } from '../helpers/raw.ts';
import { START_MS, STEP_MS, within, environment, spawnServer as startServer, run } from '../helpers/process.ts';

async function addUser(t: ExecutionContext, env: NodeJS.ProcessEnv, name: string, password: string): Promise<void> {
  // The README's form: `npm run -s cli -- user add alice secret`.
  const r = await within(run('npm', ['run', '-s', 'cli', '--', 'user', 'add', name, password], env), STEP_MS, 'npm run cli user add');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, `added ${name}@localhost\n`);
}

const STARTTLS_REQUIRED = /<starttls xmlns=(['"])urn:ietf:params:xml:ns:xmpp-tls\1\s*><required\s*\/><\/starttls>/;
const SYSTEM_SHUTDOWN = /<stream:error><system-shutdown xmlns=(['"])urn:ietf:params:xml:ns:xmpp-streams\1\s*\/>/;

/** A logged-in client sees <system-shutdown/> and the end of the stream. */
async function expectSystemShutdown(t: ExecutionContext, c: RawClient): Promise<void> {
  await within(c.waitFor(SYSTEM_SHUTDOWN), STEP_MS, '<system-shutdown/>');
  await within(c.waitFor(/<\/stream:stream>/), STEP_MS, 'the closing stream tag');
  await within(c.closed, STEP_MS, 'the server to close the connection');
  t.pass();
}

test('`npm start` (the README command) serves XMPP with STARTTLS required and shuts down gracefully on SIGTERM', async (t) => {
  const { env } = await environment(t);
  const server = startServer(t, 'npm', ['start'], env);
  const listening = await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
  t.like(listening, { level: 'info', domain: 'localhost', host: '127.0.0.1' });
  const { c2sPort, tlsPort } = server;
  t.true(c2sPort > 0 && tlsPort > 0 && c2sPort !== tlsPort, `ports ${c2sPort} and ${tlsPort}`);
  // The README's order: the server creates its stores, then accounts are added.
  await addUser(t, env, 'alice', 'secret');

  // A client's first step, byte for byte.
  const raw = await RawClient.connect(c2sPort);
  t.teardown(() => raw.destroy());
  raw.send(header());
  await within(raw.waitFor(/<\/stream:features>/), STEP_MS, '<stream:features>');
  t.regex(raw.buffer, /<stream:stream [^>]*from=(['"])localhost\1/);
  const features = raw.buffer.match(/<stream:features>[\s\S]*<\/stream:features>/)![0];
  t.regex(features, STARTTLS_REQUIRED);
  // Without TLS no mechanism is offered: authentication needs TLS first.
  t.notRegex(features, /<mechanisms/);
  raw.end();

  const { c, jid } = await within(login(c2sPort, 'alice', 'secret'), STEP_MS, 'alice to log in');
  t.teardown(() => c.destroy());
  t.is(jid, 'alice@localhost/raw');

  // What Ctrl-C or a service manager does: signal the whole process group.
  server.signalGroup('SIGTERM');
  await expectSystemShutdown(t, c);
  const end = await within(server.closed, START_MS, 'npm and the server to exit');
  t.like(await server.waitForLog('shutting down'), { signal: 'SIGTERM' });
  t.deepEqual(server.logs.filter((l) => l.level === 'error'), [], server.transcript());
  // The server's own status is hidden behind npm and sh: npm exits 0 when
  // sh ran node in its place, and by the signal when sh was killed with it.
  t.true(end.code === 0 || end.signal === 'SIGTERM', `npm ended with ${JSON.stringify(end)}\n${server.transcript()}`);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`the server process sends <system-shutdown/> to logged-in clients and exits 0 on ${signal}`, async (t) => {
    const { env } = await environment(t);
    const server = startServer(t, process.execPath, ['src/main.ts', 'start'], env);
    await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
    await addUser(t, env, 'alice', 'secret');

    const { c } = await within(login(server.c2sPort, 'alice', 'secret'), STEP_MS, 'alice to log in');
    t.teardown(() => c.destroy());

    server.child.kill(signal);
    await expectSystemShutdown(t, c);
    const end = await within(server.closed, START_MS, 'the server to exit');
    t.deepEqual(end, { code: 0, signal: null }, server.transcript());
    t.like(await server.waitForLog('shutting down'), { signal });
    t.deepEqual(server.logs.filter((l) => l.level === 'error' || l.level === 'warn'), [], server.transcript());
  });
}

test('SIGHUP with nothing changed reloads and is harmless: the server goes on serving, and stops on SIGTERM with exit 0', async (t) => {
  // A service manager's `ExecReload=kill -HUP $MAINPID` (what a reload changes: reload.test.ts).
  const { env } = await environment(t);
  const server = startServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
  const { c2sPort } = server;
  await addUser(t, env, 'alice', 'secret');
  const before = await within(login(c2sPort, 'alice', 'secret', 'before'), STEP_MS, 'alice to log in before the SIGHUP');
  t.teardown(() => before.c.destroy());

  server.child.kill('SIGHUP');
  const reloaded = await within(server.waitForLog('configuration reloaded'), STEP_MS, 'the SIGHUP log line');
  t.like(reloaded, { level: 'info', applied: [] });
  t.true(server.running, server.transcript());
  // A new login, and the session from before still answers.
  const after = await within(login(c2sPort, 'alice', 'secret', 'after'), STEP_MS, 'alice to log in after the SIGHUP');
  t.teardown(() => after.c.destroy());
  t.is(after.jid, 'alice@localhost/after');
  await within(before.c.exchange(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, /id=(["'])p1\1/), STEP_MS, 'a ping answered on the older session');

  server.child.kill('SIGTERM');
  await expectSystemShutdown(t, after.c);
  t.deepEqual(await within(server.closed, START_MS, 'the server to exit'), { code: 0, signal: null }, server.transcript());
  t.deepEqual(server.logs.filter((l) => l.level === 'error'), [], server.transcript());
});

test('a signal sent as soon as "listening" is logged still shuts down gracefully', async (t) => {
  // A service manager may stop the server the moment it reports ready.
  const { env } = await environment(t);
  const server = startServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
  server.child.kill('SIGTERM');
  const end = await within(server.closed, START_MS, 'the server to exit');
  t.deepEqual(end, { code: 0, signal: null }, server.transcript());
  t.like(await server.waitForLog('shutting down'), { signal: 'SIGTERM' });
});

test('a port already in use makes `start` exit 1 with a one-line reason', async (t) => {
  const { env } = await environment(t);
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen({ port: 0, host: '127.0.0.1' }, resolve));
  t.teardown(() => new Promise<void>((r) => blocker.close(() => r())));
  const c2sPort = (blocker.address() as net.AddressInfo).port;
  env.XMPP_C2S_PORT = String(c2sPort);
  const server = startServer(t, process.execPath, ['src/main.ts', 'start'], env);
  const end = await within(server.closed, START_MS, 'the server to exit');
  t.deepEqual(end, { code: 1, signal: null }, server.transcript());
  t.falsy(server.logs.find((l) => l.msg === 'listening'), server.transcript());
  t.deepEqual(server.other, [`cannot start: listen EADDRINUSE: address already in use 127.0.0.1:${c2sPort}`]);
});

/** Whether a new TCP connection to `port` is refused (resolves 'refused'), or what else became of it. */
function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('connect', () => {
      s.destroy();
      resolve('accepted');
    });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED' ? 'refused' : `error ${err.code}`));
  });
}

test('shutdown is bounded by XMPP_SHUTDOWN_TIMEOUT_MS when a client stops reading, and no new connection gets in meanwhile', async (t) => {
  const SHUTDOWN_MS = 1000;
  const { env } = await environment(t);
  env.XMPP_SHUTDOWN_TIMEOUT_MS = String(SHUTDOWN_MS);
  const server = startServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
  const { c2sPort, tlsPort } = server;
  await addUser(t, env, 'alice', 'secret');
  await addUser(t, env, 'bob', 'secret');

  // alice stops reading: she never sees <system-shutdown/>, never answers it,
  // not even with the TCP FIN her socket would send back on its own.
  const stuck = await within(login(c2sPort, 'alice', 'secret', 'stuck'), STEP_MS, 'alice to log in');
  t.teardown(() => stuck.c.destroy());
  const bob = await within(login(c2sPort, 'bob', 'secret', 'reader'), STEP_MS, 'bob to log in');
  t.teardown(() => bob.c.destroy());
  stuck.c.pause();
  // Something for the server to write to her (1 MiB: under XMPP_MAX_OUTBOUND_BYTES, so she is not dropped as a slow reader).
  const body = 'x'.repeat(16 * 1024);
  for (let i = 0; i < 64; i++) bob.c.send(`<message to='${stuck.jid}' type='chat'><body>${body}</body></message>`);
  await within(bob.c.exchange(`<iq type='get' id='sent' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, /id=(["'])sent\1/), STEP_MS, "bob's messages taken");

  const signalled = performance.now();
  server.child.kill('SIGTERM');
  await within(server.waitForLog('shutting down'), STEP_MS, 'the "shutting down" log line');
  // Once shutdown has begun, the listeners are closed: new connections are refused.
  t.is(await connectOutcome(c2sPort), 'refused', 'c2s port');
  t.is(await connectOutcome(tlsPort), 'refused', 'direct-TLS port');
  t.true(server.running, 'the connections were refused while the server was still shutting down');

  // A client that reads gets the goodbye as usual.
  await expectSystemShutdown(t, bob.c);
  const end = await within(server.closed, SHUTDOWN_MS + 5000, 'the server to exit (XMPP_SHUTDOWN_TIMEOUT_MS + 5 s)');
  const took = performance.now() - signalled;
  t.deepEqual(end, { code: 0, signal: null }, server.transcript());
  t.true(took < SHUTDOWN_MS + 5000, `exited ${Math.round(took)} ms after SIGTERM`);
  // It was the deadline, not alice, that ended the wait.
  t.truthy(server.logs.find((l) => l.level === 'warn' && l.msg === 'shutdown deadline reached with sessions still open'), server.transcript());
  // Nothing failed on the way: the worker still waiting on alice at the
  // deadline is stopped, which is a warning, not an error.
  t.deepEqual(server.logs.filter((l) => l.level === 'error'), [], server.transcript());
});

/** The certificate a direct-TLS client is shown, verified against `ca` for the name `localhost`. */
async function servedCertificate(port: number, ca: string): Promise<tls.PeerCertificate> {
  const s = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca });
  try {
    await within(new Promise<void>((resolve, reject) => s.once('secureConnect', resolve).once('error', reject)), STEP_MS, 'the TLS handshake');
    return s.getPeerCertificate();
  } finally {
    s.destroy();
  }
}

test('without XMPP_TLS_CERT, the self-signed certificate is generated on the first start and reused on the next', async (t) => {
  const { dir, env } = await environment(t);
  const files = { cert: join(dir, 'data', 'tls', 'localhost.crt'), key: join(dir, 'data', 'tls', 'localhost.key') };
  const GENERATED = 'generated a self-signed certificate';

  const first = startServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(first.waitForLog('listening'), START_MS, 'the first "listening" log line');
  t.like(first.logs.find((l) => l.msg === GENERATED), { level: 'info', domain: 'localhost', path: files.cert }, first.transcript());
  const cert = readFileSync(files.cert);
  const key = readFileSync(files.key);
  const x509 = new X509Certificate(cert);
  t.regex(x509.subjectAltName ?? '', /(^|, )DNS:localhost(,|$)/, 'its SAN names the domain');
  t.true(x509.checkPrivateKey(createPrivateKey(key)), 'the key is the certificate\'s');
  // Verified for "localhost" against that very certificate: the server holds its key and the SAN matches.
  const served = await servedCertificate(first.tlsPort, cert.toString());
  t.deepEqual(served.raw, x509.raw, 'the server presents the generated certificate');
  first.child.kill('SIGTERM');
  t.deepEqual(await within(first.closed, START_MS, 'the first server to exit'), { code: 0, signal: null }, first.transcript());

  const second = startServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(second.waitForLog('listening'), START_MS, 'the second "listening" log line');
  t.is(second.logs.find((l) => l.msg === GENERATED), undefined, 'nothing generated the second time');
  t.deepEqual(readFileSync(files.cert), cert, 'the certificate file is unchanged');
  t.deepEqual(readFileSync(files.key), key, 'the key file is unchanged');
  t.deepEqual((await servedCertificate(second.tlsPort, cert.toString())).raw, x509.raw, 'the same certificate is presented again');
  second.child.kill('SIGTERM');
  t.deepEqual(await within(second.closed, START_MS, 'the second server to exit'), { code: 0, signal: null }, second.transcript());
});
