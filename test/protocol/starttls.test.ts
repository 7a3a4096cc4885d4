// STARTTLS that cannot start: on a stream that is already encrypted
// (XEP-0368 direct TLS), <starttls/> gets <failure/> and the stream closes.
import test from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient, header, login } from '../helpers/raw.ts';

let server: TestServer;
test.before(async () => {
  server = await startTestServer();
  await server.addUser('alice', 'alice-pw');
});
test.after.always(() => server.stop());

test('direct TLS: no STARTTLS offered, and asking for it gets <failure/> and a close (RFC 6120 §5.4.2.2)', async (t) => {
  const { c: bystander } = await login(server.c2sPort, 'alice', 'alice-pw', 'by');
  const c = await RawClient.connect(server.tlsPort, { directTls: true });
  const features = await c.exchange(header(), /<stream:features>[\s\S]*?<\/stream:features>/);
  t.notRegex(features[0], /starttls/);
  t.regex(features[0], /<mechanism>PLAIN<\/mechanism>/);
  await c.exchange(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`, /<failure xmlns=["']urn:ietf:params:xml:ns:xmpp-tls["']\/><\/stream:stream>/);
  await c.closed;
  await bystander.exchange(`<iq type='get' id='still' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, /id=["']still["']/);
  bystander.destroy();
});
