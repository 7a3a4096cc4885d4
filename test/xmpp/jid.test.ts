// JID parsing and preparation (RFC 7622): the parts, the localpart's extra
// forbidden characters, resources, and domainparts (IDNA2008 or IP literals).
import test from 'ava';
import { parseJid, normalizeLocal, normalizeResource, normalizeDomain, JidError } from '../../src/xmpp/jid.ts';

const refused = (t: import('ava').ExecutionContext, f: (s: string) => unknown, s: string, message?: RegExp) =>
  t.throws(() => f(s), { instanceOf: JidError, ...(message ? { message } : {}) }, JSON.stringify(s));

test('parseJid splits at the first "/" and then at the first "@" (RFC 7622 §3.1), and prepares each part', (t) => {
  t.deepEqual(parseJid('Juliet@Example.COM/Balcony @ night/2'), { local: 'juliet', domain: 'example.com', resource: 'Balcony @ night/2' });
  t.deepEqual(parseJid('ＪＵＬＩＥＴ@example.com.'), { local: 'juliet', domain: 'example.com', resource: '' });
  t.deepEqual(parseJid('example.com/x'), { local: '', domain: 'example.com', resource: 'x' });
  for (const bad of ['@example.com', 'juliet@example.com/', 'a@b@c', 'juliet@', '/x', 'bob\u200b@example.com', 'bob@example.com/x\u200b']) refused(t, parseJid, bad);
});

test('a localpart is UsernameCaseMapped and may not hold " & \' / : < > @, in any width (RFC 7622 §3.3.1)', (t) => {
  t.is(normalizeLocal('ＢｏＢ'), 'bob');
  for (const c of ['"', '&', "'", '/', ':', '<', '>', '@', '＠', '＜', '＂']) refused(t, normalizeLocal, `a${c}b`, /forbidden character/);
  t.is(normalizeLocal('é'.repeat(511) + 'a').length, 512, '1023 bytes');
  refused(t, normalizeLocal, 'é'.repeat(512), /longer than 1023 bytes/);
  refused(t, normalizeLocal, 'a'.repeat(5000), /longer than 1023 bytes/);
});

test('a resourcepart is OpaqueString: spaces, symbols, "@" and "/" are kept, controls and invisible code points refused (RFC 7622 §3.4)', (t) => {
  for (const s of [' my phone ', 'Conversations.abc/def@ghi', 'ﬁ ♥ ☕', 'ＰＨＯＮＥ']) t.is(normalizeResource(s), s);
  t.is(normalizeResource('caf\u0065\u0301\u00a0bar'), 'caf\u00e9 bar');
  for (const bad of ['', 'a\tb', 'a\u0000b', 'x\u200b', '\u202ex', 'x\u0378']) refused(t, normalizeResource, bad);
  t.is(normalizeResource('é'.repeat(511) + 'a').length, 512);
  refused(t, normalizeResource, 'é'.repeat(512), /longer than 1023 bytes/);
});

test('a domainpart is a domain name in lowercase U-labels, without a final dot (RFC 7622 §3.2)', (t) => {
  for (const [input, output] of [
    ['localhost', 'localhost'], ['Example.COM.', 'example.com'], ['ｅｘａｍｐｌｅ.com', 'example.com'],
    ['xn--mnchen-3ya.de', 'münchen.de'], ['MÜNCHEN.DE', 'münchen.de'], ['fa\u00df.de', 'fa\u00df.de'],
    ['a-b.c0', 'a-b.c0'], ['a'.repeat(63) + '.example', 'a'.repeat(63) + '.example'],
  ]) t.is(normalizeDomain(input), output, JSON.stringify(input));
});

test('a domainpart may be an IPv4 address or an IPv6 address in brackets (RFC 7622 §3.2.1)', (t) => {
  t.is(normalizeDomain('127.0.0.1'), '127.0.0.1');
  t.is(normalizeDomain('[::1]'), '[::1]');
  t.is(normalizeDomain('[2001:DB8::1]'), '[2001:db8::1]');
  t.is(normalizeDomain('[::ffff:192.0.2.1]'), '[::ffff:192.0.2.1]');
  for (const bad of ['[::1', '::1', '[::1]:5222', '[fe80::1%eth0]', '[1.2.3.4]', '[]', '[example.com]']) refused(t, normalizeDomain, bad);
});

test('malformed domainparts are refused: empty labels, ports, underscores, misplaced hyphens, lengths, symbols, unassigned code points', (t) => {
  refused(t, normalizeDomain, 'chat..example', /empty label/);
  refused(t, normalizeDomain, 'domain:5222', /"domain:5222" is not a host name label/);
  for (const bad of [
    '', '.', '.example', 'example..', 'exa mple.com', 'a_b.example', '-a.example', 'a-.example', 'ab--cd.example',
    'a'.repeat(64) + '.example', `${'a'.repeat(60)}.`.repeat(5) + 'x', 'xn--a.example', 'xn--ls8h-.example',
    '\u{1f600}.example', '\u2665.example', '\u208f.example', 'a\u00b7b.example', 'a\u200db.example', 'a\u05d0.example', 'bob@example',
  ]) refused(t, normalizeDomain, bad);
  refused(t, normalizeDomain, '\u{1f600}.example', /U\+1F600 is not allowed/);
  refused(t, normalizeDomain, '\u208f.example', /U\+208F is unassigned/);
});
