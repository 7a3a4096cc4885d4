// shouldStore (RFC 6121 §8.5.2.2.1, XEP-0160 §3, XEP-0334 §4) and stamp
// (XEP-0203), on stanzas parsed the way the server parses them.
import test from 'ava';
import type { Element } from 'ltx';
import { StreamParser } from '../../src/xml/parser.ts';
import { shouldStore, stamp, contentless } from '../../src/offline/offline.ts';

const NS_DELAY = 'urn:xmpp:delay';

/** Parses stanzas as a client stream would carry them: top-level, detached, no xmlns of their own. */
function stanza(xml: string): Element {
  const out: Element[] = [];
  const errors: string[] = [];
  const p = new StreamParser({
    streamStart: () => {},
    element: (el) => out.push(el),
    streamEnd: () => {},
    error: (c, text) => errors.push(`${c}: ${text}`),
  }, { maxStanzaBytes: 1 << 20 });
  p.write(Buffer.from(`<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>${xml}`));
  if (errors.length > 0 || out.length !== 1) throw new Error(`cannot parse ${xml}: ${errors.join('; ')}`);
  return out[0];
}

const HINTS = 'urn:xmpp:hints';
const CSN = 'http://jabber.org/protocol/chatstates';
const m = (attrs: string, inner: string) => stanza(`<message to='bob@localhost'${attrs}>${inner}</message>`);

const cases: [string, Element, boolean][] = [
  ['no type, with a body', m('', '<body>hi</body>'), true],
  ['type normal', m(" type='normal'", '<body>hi</body>'), true],
  ['type chat', m(" type='chat'", '<body>hi</body>'), true],
  ['an unknown type is normal (RFC 6121 §5.2.2)', m(" type='whatever'", '<body>hi</body>'), true],
  ['headline', m(" type='headline'", '<body>news</body>'), false],
  ['groupchat', m(" type='groupchat'", '<body>room</body>'), false],
  ['error', m(" type='error'", `<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>`), false],
  ['chat with no body: only a receipt (XEP-0184) is content-less', m(" type='chat'", `<received xmlns='urn:xmpp:receipts' id='x'/>`), false],
  ['a chat marker beside an unknown payload: stored for the payload', m(" type='chat'", `<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/><store xmlns='urn:example:not-a-hint'/>`), true],
  ['only a chat marker, an origin id and a thread', m(" type='chat'", `<thread>t</thread><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/><origin-id xmlns='urn:xmpp:sid:0' id='o'/>`), false],
  ['a receipt with <store/> is stored', m(" type='chat'", `<received xmlns='urn:xmpp:receipts' id='x'/><store xmlns='${HINTS}'/>`), true],
  ['an encrypted payload with no body (OMEMO)', m(" type='chat'", `<encrypted xmlns='eu.siacs.conversations.axolotl'><payload>x</payload></encrypted>`), true],
  ['a subject only', m('', '<subject>s</subject>'), true],
  ['normal with no body: a direct MUC invitation (XEP-0249)', m('', `<x xmlns='jabber:x:conference' jid='room@muc.localhost'/>`), true],
  ['chat with only a chat state', m(" type='chat'", `<composing xmlns='${CSN}'/>`), false],
  ['chat with a chat state, a thread and hints only', m(" type='chat'", `<thread>t1</thread><paused xmlns='${CSN}'/><no-permanent-store xmlns='${HINTS}'/><origin-id xmlns='urn:xmpp:sid:0' id='o'/>`), false],
  ['normal with only a chat state', m('', `<active xmlns='${CSN}'/>`), false],
  ['chat with a chat state and a body', m(" type='chat'", `<active xmlns='${CSN}'/><body>hi</body>`), true],
  ['chat with a chat state and a receipt request, no body', m(" type='chat'", `<active xmlns='${CSN}'/><request xmlns='urn:xmpp:receipts'/>`), false],
  ['<no-store/>', m(" type='chat'", `<body>secret</body><no-store xmlns='${HINTS}'/>`), false],
  ['<no-store/> with a prefix declared on the stanza', m(" type='chat' xmlns:h='urn:xmpp:hints'", '<body>secret</body><h:no-store/>'), false],
  ['<no-store/> beats <store/>', m('', `<body>x</body><store xmlns='${HINTS}'/><no-store xmlns='${HINTS}'/>`), false],
  ['<no-permanent-store/> allows offline storage', m(" type='chat'", `<body>otr</body><no-permanent-store xmlns='${HINTS}'/>`), true],
  ['<store/> on a chat state only', m(" type='chat'", `<gone xmlns='${CSN}'/><store xmlns='${HINTS}'/>`), true],
  ['<store/> on a headline does not override RFC 6121', m(" type='headline'", `<body>x</body><store xmlns='${HINTS}'/>`), false],
  ['<store/> on an error does not either', m(" type='error'", `<store xmlns='${HINTS}'/>`), false],
  ['<store/> on a groupchat does not either', m(" type='groupchat'", `<body>x</body><store xmlns='${HINTS}'/>`), false],
  ['a no-store element in another namespace is no hint', m(" type='chat'", `<body>x</body><no-store xmlns='urn:example:other'/>`), true],
  ['a hint nested deeper is no hint', m(" type='chat'", `<body>x</body><x xmlns='urn:example'><no-store xmlns='${HINTS}'/></x>`), true],
  ['a chatstates element in the jabber:client namespace is not a chat state', m(" type='chat'", '<composing/>'), true],
  ['an empty message has no content', m('', ''), false],
  ['presence', stanza(`<presence to='bob@localhost'/>`), false],
  ['iq', stanza(`<iq type='get' id='1' to='bob@localhost'><ping xmlns='urn:xmpp:ping'/></iq>`), false],
];

for (const [what, el, expected] of cases) {
  test(`shouldStore: ${what} → ${expected}`, (t) => {
    t.is(shouldStore(el), expected, el.toString());
  });
}

test('contentless: only chat states, receipts, markers and incidentals; never presence or iq', (t) => {
  t.true(contentless(m('', '')));
  t.true(contentless(m(" type='chat'", `<composing xmlns='${CSN}'/><received xmlns='urn:xmpp:receipts' id='x'/>`)));
  t.false(contentless(m(" type='chat'", `<composing xmlns='${CSN}'/><body>hi</body>`)));
  t.false(contentless(m('', `<x xmlns='jabber:x:oob'><url>https://x</url></x>`)));
  t.false(contentless(stanza(`<presence to='bob@localhost'/>`)));
});

test('stamp adds one XEP-0203 delay: from the server, UTC, XEP-0082 DateTime', (t) => {
  const el = m(" type='chat' id='s1'", '<body>hi</body>');
  const before = el.toString();
  const at = new Date(Date.UTC(2024, 1, 29, 23, 59, 58, 7));
  const out = stamp(el, 'localhost', at);
  t.is(el.toString(), before, 'the input is left unchanged');
  const delays = out.getChildren('delay', NS_DELAY);
  t.is(delays.length, 1);
  t.deepEqual(delays[0].attrs, { xmlns: NS_DELAY, from: 'localhost', stamp: '2024-02-29T23:59:58.007Z' });
  t.deepEqual(delays[0].children, []);
  t.regex(delays[0].attrs.stamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  t.is(out.attrs.id, 's1');
  t.is(out.getChildText('body'), 'hi');
  t.is(out.children.filter((c) => typeof c !== 'string').length, 2, 'body and delay, nothing else');
  t.true(out.toString().startsWith(`<message to="bob@localhost" type="chat" id="s1"><body>hi</body><delay `), out.toString());
});

test('stamp is a no-op when the stanza already has our delay; another entity’s delay is kept beside ours', (t) => {
  const at = new Date(Date.UTC(2025, 0, 1));
  const once = stamp(m('', '<body>x</body>'), 'localhost', at);
  const twice = stamp(once, 'localhost', new Date(Date.UTC(2026, 0, 1)));
  t.is(twice.toString(), once.toString());
  const fromClient = m('', `<body>x</body><delay xmlns='${NS_DELAY}' from='alice@localhost/a' stamp='2020-01-01T00:00:00Z'/>`);
  const out = stamp(fromClient, 'localhost', at);
  t.deepEqual(out.getChildren('delay', NS_DELAY).map((d) => [d.attrs.from, d.attrs.stamp]), [
    ['alice@localhost/a', '2020-01-01T00:00:00Z'],
    ['localhost', '2025-01-01T00:00:00.000Z'],
  ]);
  const legacy = stamp(m('', `<body>x</body><x xmlns='jabber:x:delay' from='localhost' stamp='20200101T00:00:00'/>`), 'localhost', at);
  t.is(legacy.getChildren('delay', NS_DELAY).length, 1, 'a legacy jabber:x:delay (XEP-0091) is not ours');
});

test('stamp survives serialising and parsing again, escaping included', (t) => {
  const el = m(" type='chat'", '<body>&lt;b&gt; &amp; "q"</body>');
  const back = stanza(stamp(el, 'localhost', new Date(0)).toString());
  t.is(back.getChildText('body'), '<b> & "q"');
  t.is(back.getChild('delay', NS_DELAY)?.attrs.stamp, '1970-01-01T00:00:00.000Z');
});

test('stamp rejects an invalid date', (t) => {
  t.throws(() => stamp(m('', ''), 'localhost', new Date(Number.NaN)), { instanceOf: RangeError });
});
