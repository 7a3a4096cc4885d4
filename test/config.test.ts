import test from 'ava';
import { loadConfig, ConfigError } from '../src/config/index.ts';

test('defaults give a single node on the standard ports', (t) => {
  const c = loadConfig({});
  t.is(c.c2sPort, 5222);
  t.is(c.tlsPort, 5223);
  t.true(c.tlsRequired);
  t.is(c.redisUrl, '');
});

test('environment variables override defaults and are validated by name', (t) => {
  t.is(loadConfig({ XMPP_C2S_PORT: '15222' }).c2sPort, 15222);
  const err = t.throws(() => loadConfig({ XMPP_C2S_PORT: 'abc' }), { instanceOf: ConfigError });
  t.regex(err!.message, /XMPP_C2S_PORT/);
  t.regex(t.throws(() => loadConfig({ XMPP_SCRAM_ITERATIONS: '10' }))!.message, /XMPP_SCRAM_ITERATIONS.*at least 4096/);
  t.regex(t.throws(() => loadConfig({ XMPP_CONFLICT_POLICY: 'x' }))!.message, /XMPP_CONFLICT_POLICY/);
});
