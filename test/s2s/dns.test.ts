// Finding peers through DNS (RFC 6120 §3.2, XEP-0368), against a DNS
// server of the test's own (dns-packet over UDP on a free port, given to
// the server as XMPP_S2S_DNS_SERVERS): an _xmpps-server SRV record leads to
// a peer's direct-TLS port, an _xmpp-server one to its STARTTLS port on
// another host name, a domain with no SRV record is reached on its A
// record at 5269, and a domain that says it has no service (target ".")
// or does not exist gets remote-server-not-found at once.
import test from 'ava';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import type { Answer, Packet } from 'dns-packet';
import { testCa, issue } from '../helpers/pki.ts';
import { federation, loopbackAddresses } from '../helpers/s2s.ts';
import type { Federated } from '../helpers/s2s.ts';
import { stanzaError } from '../helpers/protocol.ts';
import { expect, isBody, newUser } from '../helpers/im.ts';
import { ordered } from '../../src/s2s/resolve.ts';

const dir = mkdtempSync(join(tmpdir(), 'xmpp-s2s-dns-'));
const ca = testCa(dir, 'dns-ca');
const [homeAddr, tlsAddr, srvAddr, plainAddr] = loopbackAddresses(4);
let home: Federated;
let stop: () => Promise<void>;
let dns: dgram.Socket;
/** Questions the DNS server was asked, as "TYPE name". */
const asked: string[] = [];

/** The zone: records by "TYPE name". */
const zone = new Map<string, Answer[]>([
  // Direct TLS (XEP-0368) at a host name of its own, on port 5270.
  ['SRV _xmpps-server._tcp.tls.example', [{ type: 'SRV', name: '_xmpps-server._tcp.tls.example', data: { priority: 0, weight: 5, port: 5270, target: 'xmpp.tls.example' } }]],
  ['A xmpp.tls.example', [{ type: 'A', name: 'xmpp.tls.example', data: tlsAddr }]],
  // STARTTLS through an SRV record pointing at another host name.
  ['SRV _xmpp-server._tcp.srv.example', [{ type: 'SRV', name: '_xmpp-server._tcp.srv.example', data: { priority: 10, weight: 0, port: 5269, target: 'chat-host.srv.example' } }]],
  ['A chat-host.srv.example', [{ type: 'A', name: 'chat-host.srv.example', data: srvAddr }]],
  // No SRV record: the domain's own address, port 5269.
  ['A plain.example', [{ type: 'A', name: 'plain.example', data: plainAddr }]],
  // "No service here" (RFC 2782: a single record with target "."), and no
  // direct-TLS record: no fallback to the domain's address either.
  ['SRV _xmpp-server._tcp.none.example', [{ type: 'SRV', name: '_xmpp-server._tcp.none.example', data: { priority: 0, weight: 0, port: 0, target: '.' } }]],
  ['A none.example', [{ type: 'A', name: 'none.example', data: plainAddr }]],
]);

test.before(async () => {
  dns = dgram.createSocket('udp4');
  dns.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions?.[0];
    if (!question) return;
    const key = `${question.type} ${question.name}`;
    asked.push(key);
    const answers = zone.get(key) ?? [];
    const known = [...zone.keys()].some((k) => k.endsWith(` ${question.name}`));
    const reply: Packet = { id: q.id, type: 'response', flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers, ...(known ? {} : { rcode: 'NXDOMAIN' }) };
    dns.send(dnsPacket.encode(reply), rinfo.port, rinfo.address);
  });
  dns.bind(0, '127.0.0.1');
  await once(dns, 'listening');
  const dnsPort = dns.address().port;
  const cert = (d: string) => issue(dir, ca, d, { dns: [d] });
  const f = await federation(
    [
      // Home finds every peer through the test's DNS; the peers find home through XMPP_S2S_HOSTS.
      { domain: 'home.example', cert: cert('home.example'), env: { XMPP_S2S_HOSTS: '', XMPP_S2S_DNS_SERVERS: `127.0.0.1:${dnsPort}` } },
      { domain: 'tls.example', cert: cert('tls.example'), env: { XMPP_S2S_TLS_PORT: '5270' } },
      { domain: 'srv.example', cert: cert('srv.example') },
      { domain: 'plain.example', cert: cert('plain.example') },
    ],
    { addresses: [homeAddr, tlsAddr, srvAddr, plainAddr], env: { XMPP_TLS_CA: ca.cert } },
  );
  home = f.servers[0];
  peers = f.servers.slice(1);
  stop = f.stop;
});
let peers: Federated[];
test.after.always(async () => {
  dns?.close();
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});

for (const [i, how] of ['an _xmpps-server SRV record: direct TLS (XEP-0368)', 'an _xmpp-server SRV record to another host name', 'no SRV record: the A record, port 5269'].entries()) {
  test.serial(`a peer found through ${how}; messages both ways`, async (t) => {
    const peer = peers[i];
    const me = await newUser(t, home.server, 'me');
    const you = await newUser(t, peer.server, 'you');
    me.c.send(`<message to='${you.jid}' type='chat'><body>found you</body></message>`);
    t.is((await expect(you, 'the message found through DNS', isBody('found you'))).attrs.from, me.jid);
    you.c.send(`<message to='${me.jid}' type='chat'><body>and back</body></message>`);
    await expect(me, 'the answer', isBody('and back'));
  });
}

test.serial('the lookups asked for: both SRV names first, then the target host', (t) => {
  for (const q of ['SRV _xmpps-server._tcp.tls.example', 'A xmpp.tls.example', 'SRV _xmpp-server._tcp.srv.example', 'A chat-host.srv.example', 'SRV _xmpps-server._tcp.plain.example', 'SRV _xmpp-server._tcp.plain.example', 'A plain.example']) {
    t.true(asked.includes(q), `${q} was asked`);
  }
});

test.serial('a domain with no XMPP service (SRV target ".") or that does not exist: remote-server-not-found', async (t) => {
  const me = await newUser(t, home.server, 'me');
  for (const to of ['someone@none.example', 'someone@nxdomain.example']) {
    const id = `dns-${to}`;
    const from = me.c.items.length;
    me.c.send(`<message to='${to}' id='${id}' type='chat'><body>hello?</body></message>`);
    const err = await expect(me, `the error for ${to}`, (el) => el.attrs.id === id && el.attrs.type === 'error', from);
    t.is(stanzaError(err).condition, 'remote-server-not-found');
  }
  // "." is taken at its word: no address is looked up for it.
  t.false(asked.some((q) => q.endsWith(' none.example') && q.startsWith('A ')));
});

test('SRV records in priority order, weighted within a priority (RFC 2782)', (t) => {
  const r = (priority: number, weight: number, name: string) => ({ priority, weight, port: 1, name });
  for (let i = 0; i < 50; i++) {
    const out = ordered([r(20, 0, 'c'), r(10, 0, 'a'), r(10, 0, 'b'), r(5, 100, 'first')]).map((x) => x.name);
    t.is(out[0], 'first');
    t.deepEqual(new Set(out.slice(1, 3)), new Set(['a', 'b']));
    t.is(out[3], 'c');
  }
  // A weight of 0 next to positive weights is picked last almost always; with all weights positive, the heavier first more often.
  let heavyFirst = 0;
  for (let i = 0; i < 400; i++) if (ordered([r(0, 1, 'light'), r(0, 99, 'heavy')])[0].name === 'heavy') heavyFirst++;
  t.true(heavyFirst > 300, `heavy first ${heavyFirst} times in 400`);
});
