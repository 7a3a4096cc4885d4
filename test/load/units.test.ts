// The load tool's pieces on their own: its tokenizer, its SCRAM-SHA-1
// client, its option parsing and its report.
import test from 'ava';
import { Tokenizer, attr, childText, errorCondition, startTag } from '../../src/load/tokenizer.ts';
import { ScramClient } from '../../src/load/scram.ts';
import { parseLoadArgs, UsageError } from '../../src/load/cli.ts';
import { renderReport } from '../../src/load/report.ts';
import { Aggregate, Recorder } from '../../src/load/stats.ts';
import { Receipts, instantRoom, joinPresence, lostDeliveries, mucBody, parseMucBody, roomCreated } from '../../src/load/muc.ts';

type Ev = [string, string];

function tokenize(chunks: string[]): Ev[] {
  const out: Ev[] = [];
  const tok = new Tokenizer({
    header: (tag) => out.push(['header', tag]),
    element: (name, raw) => out.push([name, raw]),
    end: () => out.push(['end', '']),
  });
  for (const c of chunks) tok.write(c);
  return out;
}

const STREAM =
  `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='x' from='localhost' version='1.0'>` +
  `<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>` +
  ' \n' +
  `<message from="a@localhost/r" to="b@localhost/load" type="chat" id="m1"><body>lt 1.5 &lt;&gt; &amp; a&gt;b</body><x a='1>2' b="q'q"/></message>` +
  `<iq type="result" id="bind1"/>` +
  `<message><body><![CDATA[ </message> <x> ]]></body></message>` +
  '</stream:stream>';

const EXPECTED: Ev[] = [
  ['header', `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='x' from='localhost' version='1.0'>`],
  ['stream:features', `<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>`],
  ['message', `<message from="a@localhost/r" to="b@localhost/load" type="chat" id="m1"><body>lt 1.5 &lt;&gt; &amp; a&gt;b</body><x a='1>2' b="q'q"/></message>`],
  ['iq', `<iq type="result" id="bind1"/>`],
  ['message', `<message><body><![CDATA[ </message> <x> ]]></body></message>`],
  ['end', ''],
];

test('tokenizer: top-level elements of a stream, whole', (t) => {
  t.deepEqual(tokenize([STREAM]), EXPECTED);
});

test('tokenizer: the same whatever the chunking, down to one character at a time', (t) => {
  t.deepEqual(tokenize([...STREAM]), EXPECTED);
  for (let size = 2; size < 40; size += 3) {
    const chunks: string[] = [];
    for (let i = 0; i < STREAM.length; i += size) chunks.push(STREAM.slice(i, i + size));
    t.deepEqual(tokenize(chunks), EXPECTED, `chunks of ${size}`);
  }
});

test('tokenizer: a restarted stream after reset()', (t) => {
  const out: Ev[] = [];
  const tok = new Tokenizer({
    header: (tag) => out.push(['header', tag]),
    element: (name, raw) => {
      out.push([name, raw]);
      if (name === 'success') tok.reset(); // what the client does: anything after belongs to a new stream
    },
    end: () => out.push(['end', '']),
  });
  tok.write(`<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>garbage that is dropped`);
  tok.write(`<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='2'><stream:features><bind/></stream:features>`);
  t.deepEqual(
    out.map((e) => e[0]),
    ['header', 'success', 'header', 'stream:features'],
  );
});

test('tokenizer helpers: attributes, child text, error conditions', (t) => {
  const m = `<message from="a@localhost/r" type='error' id="m1"><body>hi</body><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`;
  const tag = startTag(m);
  t.is(tag, `<message from="a@localhost/r" type='error' id="m1">`);
  t.is(attr(tag, 'type'), 'error');
  t.is(attr(tag, 'from'), 'a@localhost/r');
  t.is(attr(tag, 'to'), undefined);
  t.is(childText(m, 'body'), 'hi');
  t.is(childText(m, 'subject'), undefined);
  t.is(errorCondition(m, 'error'), 'service-unavailable');
  t.is(errorCondition(`<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text>no</text></failure>`), 'not-authorized');
  t.is(errorCondition(`<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`), 'conflict');
  t.is(childText(`<iq type='result'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>u@d/r</jid></bind></iq>`, 'jid'), 'u@d/r');
});

test('SCRAM-SHA-1 client: the exchange of RFC 5802 section 5', async (t) => {
  const c = new ScramClient('user', 'pencil', 'fyko+d2lbbFgONRv9qkxdawL');
  t.is(Buffer.from(c.first(), 'base64').toString(), 'n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL');
  const serverFirst = 'r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096';
  const final = await c.final(Buffer.from(serverFirst).toString('base64'));
  t.is(Buffer.from(final, 'base64').toString(), 'c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=');
  t.true(c.verify(Buffer.from('v=rmF9pqV8S7suAoZWja4dJRkFsKQ=').toString('base64')));
  t.false(c.verify(Buffer.from('v=AAAApqV8S7suAoZWja4dJRkFsKQ=').toString('base64')));
});

test('SCRAM-SHA-1 client: a server nonce that does not extend ours is refused', async (t) => {
  const c = new ScramClient('user', 'pencil', 'abc');
  await t.throwsAsync(c.final(Buffer.from('r=xyz,s=QSXCR+Q6sek8bf92,i=4096').toString('base64')));
});

test('options: defaults, per workload', (t) => {
  const login = parseLoadArgs(['login']);
  if (login === 'help') return t.fail();
  t.like(login, { workload: 'login', host: '127.0.0.1', port: 5222, domain: 'localhost', tls: 'starttls', mechanism: 'SCRAM-SHA-1', users: 100, userPrefix: 'user', password: 'password', workers: 1, durationS: 60, count: 1_000_000, rate: 100 });
  t.like(parseLoadArgs(['chat']), { rate: 1 });
  t.like(parseLoadArgs(['idle', '--connections', '500']), { users: 500, connections: 500 });
  t.like(parseLoadArgs(['storm', '--tls', 'direct', '--mechanism', 'plain']), { port: 5223, mechanism: 'PLAIN' });
  t.like(parseLoadArgs(['muc', '--rooms', '3', '--occupants', '7']), { rooms: 3, occupants: 7, users: 21, rate: 1, roomPrefix: 'loadroom', mucDomain: 'conference.localhost', drainS: 5 });
  t.like(parseLoadArgs(['muc', '--domain', 'example.org', '--users', '7', '--occupants', '7']), { users: 7, mucDomain: 'conference.example.org' });
  t.is(parseLoadArgs(['--help']), 'help');
});

test('options: bad values are usage errors', (t) => {
  const cases: [string[], RegExp][] = [
    [[], /which workload/],
    [['dance'], /unknown workload "dance"/],
    [['login', '--users', '0'], /--users: "0" is not a whole number of at least 1/],
    [['login', '--rate', 'x'], /--rate: "x" is not a number/],
    [['login', '--tls', 'ssl'], /--tls: starttls, direct or none/],
    [['login', '--mechanism', 'DIGEST-MD5'], /--mechanism: SCRAM-SHA-1, PLAIN or ANONYMOUS/],
    [['login', '--bogus'], /bogus/],
    [['login', 'extra'], /unexpected argument "extra"/],
    [['login', '--port', '70000'], /--port: at most 65535/],
    [['login', '--user-prefix', 'a@b'], /--user-prefix: not a valid localpart/],
    [['muc', '--occupants', '5', '--users', '4'], /--users: at least --occupants \(5\)/],
    [['muc', '--rooms', '0'], /--rooms: "0" is not a whole number of at least 1/],
    [['muc', '--room-prefix', 'Room'], /--room-prefix: lowercase/],
    [['muc', '--muc-domain', 'a/b'], /--muc-domain: not a domain/],
  ];
  for (const [argv, message] of cases) t.throws(() => parseLoadArgs(argv), { instanceOf: UsageError, message }, argv.join(' '));
});

test('stats: worker deltas merge into totals, percentiles in order', (t) => {
  const agg = new Aggregate(0);
  for (let w = 0; w < 2; w++) {
    const r = new Recorder();
    for (let i = 1; i <= 1000; i++) r.latency(i / 10 + w * 100); // 0.1..100 ms, then 100.1..200 ms
    r.completed = 1000;
    r.error('timeout');
    agg.add(w, r.take(), 500);
  }
  t.is(agg.completed, 2000);
  t.is(agg.failed, 2);
  t.deepEqual(agg.errors, { timeout: 2 });
  const l = agg.latency();
  t.true(Math.abs(l.p50 - 100) < 1, `p50 ${l.p50}`);
  t.true(l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max);
  t.true(Math.abs(l.max - 200) < 1, `max ${l.max}`);
  const series = agg.series();
  t.is(series.length, 1);
  t.is(series[0].completed, 2000);
});

test('report: a self-contained HTML page with two SVG charts', (t) => {
  const html = renderReport({
    title: 'load <test>',
    summary: { workload: 'chat', completed: 3, latencyMs: { p50: 1, p95: 2, p99: 3, max: 4, mean: 1.5 }, errors: { lost: 1 } },
    series: [
      { t: 0, completed: 1, failed: 0, sent: 1, delivered: 1, p50: 1, p99: 2, max: 3 },
      { t: 1, completed: 2, failed: 1, sent: 3, delivered: 2, p50: 1, p99: 2, max: 4 },
    ],
    throughput: [{ key: 'delivered', label: 'delivered' }],
    latencyLabel: 'sent to delivered',
  });
  t.regex(html, /^<!doctype html>/);
  t.is(html.match(/<svg /g)?.length, 2);
  t.is(html.match(/<polyline /g)?.length, 4);
  t.true(html.includes('load &lt;test&gt;'));
  t.false(/<script|src=|href=/.test(html), 'nothing loaded from elsewhere');
});

test('muc: the body carries the sequence number and the send time; anything else is not ours', (t) => {
  t.deepEqual(parseMucBody(mucBody(42, '1700000000123.456')), { seq: 42, sentAt: 1700000000123.456 });
  for (const body of ['hello', 'lm', 'lm 5', 'lm x 1', 'lm 0 1', 'lm -1 1', 'lm 1.5 1', 'lm 3 now', 'lt 1 2']) t.is(parseMucBody(body), undefined, body);
});

test('muc: each message received once; a second time is a duplicate, what never came is lost', (t) => {
  const a = new Receipts();
  const b = new Receipts();
  t.true(a.mark(1));
  t.true(a.mark(1000)); // beyond the first allocation: it grows
  t.false(a.mark(1));
  t.false(a.mark(1000));
  for (let seq = 2; seq <= 10; seq++) t.true(a.mark(seq));
  t.is(a.received, 11);
  for (const seq of [1, 2, 3]) b.mark(seq);
  // 10 sent, none bounced: a has all of 1..10 (and one beyond), b misses 7.
  t.is(lostDeliveries(10, 0, [a, b]), 7);
  // 2 came back as errors: 8 accepted; b misses 5.
  t.is(lostDeliveries(10, 2, [a, b]), 5);
  t.is(lostDeliveries(0, 0, [new Receipts()]), 0);
});

test('muc: entering without history, the instant room form, and the creation status', (t) => {
  t.is(joinPresence('r1@conference.localhost', 'o1'), `<presence to='r1@conference.localhost/o1'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>`);
  t.regex(instantRoom('r1@conference.localhost', 'c1'), /^<iq type='set' id='c1' to='r1@conference.localhost'><query xmlns='http:\/\/jabber.org\/protocol\/muc#owner'><x xmlns='jabber:x:data' type='submit'\/><\/query><\/iq>$/);
  t.true(roomCreated(`<presence from='r@c/o1'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/><status code='110'/><status code="201"/></x></presence>`));
  t.false(roomCreated(`<presence from='r@c/o1'><x xmlns='http://jabber.org/protocol/muc#user'><status code='110'/><status code='2010'/></x></presence>`));
});
