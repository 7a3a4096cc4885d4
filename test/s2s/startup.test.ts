// What a node says at start about federation: its peer port in the
// "listening" line, and a warning when its certificate does not name the
// domain it serves (peers check that, RFC 6120 §13.7.2.1), but not when it
// does, nor with federation off.
import test from 'ava';
import { issue, testCa } from '../helpers/pki.ts';
import { START_MS, environment, spawnServer, within } from '../helpers/process.ts';

const WARNING = 'the TLS certificate does not name the served domain: peer servers will refuse it';

test('a certificate for another name: a warning at start; the peer port is in the listening line', async (t) => {
  const { dir, env } = await environment(t);
  const ca = testCa(dir, 'ca');
  const cert = issue(dir, ca, 'other', { dns: ['other.example'] });
  const server = spawnServer(t, process.execPath, ['src/main.ts', 'start'], { ...env, XMPP_DOMAIN: 'mine.example', XMPP_TLS_CERT: cert.cert, XMPP_TLS_KEY: cert.key });
  const listening = await within(server.waitForLog('listening'), START_MS, 'listening');
  t.true(typeof listening.s2sPort === 'number' && listening.s2sPort > 0, `s2sPort ${String(listening.s2sPort)}`);
  const warn = server.logs.find((l) => l.msg === WARNING);
  t.like(warn, { level: 'warn', domain: 'mine.example' });
});

test('a certificate for the domain, or federation off: no warning, and no peer port with federation off', async (t) => {
  const { dir, env } = await environment(t);
  const ca = testCa(dir, 'ca');
  const cert = issue(dir, ca, 'mine', { dns: ['mine.example'] });
  const good = spawnServer(t, process.execPath, ['src/main.ts', 'start'], { ...env, XMPP_DOMAIN: 'mine.example', XMPP_TLS_CERT: cert.cert, XMPP_TLS_KEY: cert.key });
  await within(good.waitForLog('listening'), START_MS, 'listening');
  t.false(good.logs.some((l) => l.msg === WARNING));
  const off = spawnServer(t, process.execPath, ['src/main.ts', 'start'], { ...env, XMPP_DATA_DIR: `${dir}/data2`, XMPP_DOMAIN: 'elsewhere.example', XMPP_TLS_CERT: cert.cert, XMPP_TLS_KEY: cert.key, XMPP_S2S: 'false' });
  const listening = await within(off.waitForLog('listening'), START_MS, 'listening');
  t.is(listening.s2sPort, undefined);
  t.false(off.logs.some((l) => l.msg === WARNING));
});
