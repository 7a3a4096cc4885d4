// The PRECIS profiles of RFC 8265 as JIDs use them (src/xmpp/precis.ts), and
// the generated code point tables behind them.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { usernameCaseMapped, opaqueString, PrecisError } from '../../src/xmpp/precis.ts';
import { buildTables } from '../../scripts/precis-tables.ts';

const refused = (t: import('ava').ExecutionContext, f: (s: string) => string, s: string, message?: RegExp) =>
  t.throws(() => f(s), { instanceOf: PrecisError, ...(message ? { message } : {}) }, JSON.stringify(s));

test('UsernameCaseMapped: the examples of RFC 8265 §3.5', (t) => {
  // The profile itself allows "@"; only JID localparts forbid it (RFC 7622 §3.3.1).
  for (const [input, output] of [
    ['juliet@example.com', 'juliet@example.com'], ['fussball', 'fussball'], ['fu\u00dfball', 'fu\u00dfball'],
    ['\u03c0', '\u03c0'], ['\u03a3', '\u03c3'], ['\u03c3', '\u03c3'], ['\u03c2', '\u03c2'],
  ]) t.is(usernameCaseMapped(input), output, JSON.stringify(input));
  for (const bad of ['foo bar', '', 'henri\u2163', '\u265a', '\u01c4']) refused(t, usernameCaseMapped, bad);
});

test('UsernameCaseMapped: width, case and normalization mapping', (t) => {
  t.is(usernameCaseMapped('ＢＯＢ'), 'bob', 'fullwidth to ASCII (RFC 8265 §3.4.1)');
  t.is(usernameCaseMapped('ｶﾞ'), '\u30ac', 'halfwidth katakana and voiced mark to their decompositions, then NFC');
  // FULLWIDTH MACRON maps to MACRON (its decomposition, not NFKC's " \u0304"), which is HasCompat.
  refused(t, usernameCaseMapped, '\uffe3', /U\+00AF is not allowed/);
  t.is(usernameCaseMapped('ΟΔΥΣΣΕΥΣ'), 'οδυσσευς', 'toLowerCase() with the final sigma');
  t.is(usernameCaseMapped('\u0130stanbul'), 'i\u0307stanbul', 'toLowerCase(), not case folding');
  t.is(usernameCaseMapped('Cafe\u0301'), 'caf\u00e9', 'NFC');
  t.is(usernameCaseMapped('\u00e9'), usernameCaseMapped('e\u0301'), 'canonically equivalent spellings prepare alike');
});

test('UsernameCaseMapped refuses look-alikes: invisible, bidi-control, compatibility, private-use, noncharacter and unassigned code points', (t) => {
  const lookAlikes = [
    'bob\u200b', 'b\u00adob', 'bo\u2060b', '\ufeffbob', 'bob\u180e', 'b\u034fob', // default ignorables
    '\u202ebob', '\u202dbob', 'bob\u200e', 'bob\u200f', '\u2066bob\u2069', // directional formatting
    '\ufb01x', '\u1d47ob', '\u212cob', '\u24d1ob', // compatibility (HasCompat)
    'bob\ue000', 'bob\uffff', 'bob\u0378', 'bob\u{e0080}', // private use, noncharacter, unassigned
    'bob\u0007', 'bob\u0085', // controls
  ];
  for (const s of lookAlikes) refused(t, usernameCaseMapped, s);
  refused(t, usernameCaseMapped, 'bob\u0378', /U\+0378 is unassigned/);
  refused(t, usernameCaseMapped, 'b\u00adob', /U\+00AD is disallowed/);
  refused(t, usernameCaseMapped, '\ud800bob', /well-formed/);
});

test('UsernameCaseMapped applies the Bidi Rule (RFC 5893 §2) to right-to-left strings', (t) => {
  for (const ok of ['\u05d0\u05d1\u05d2', '\u05d3\u05d5\u05d37', '\u05d01\u05d1', '\u0627\u0644\u0639\u0631\u0628\u064a\u0629', '\u0627\u064b', 'abc123']) {
    t.is(usernameCaseMapped(ok), ok, JSON.stringify(ok));
  }
  refused(t, usernameCaseMapped, '1\u05d0', /rule 1 /);
  refused(t, usernameCaseMapped, '\u05d0a', /rule 2 /);
  refused(t, usernameCaseMapped, '\u05d0!', /rule 3 /);
  refused(t, usernameCaseMapped, '\u05d01\u0661', /rule 4 /);
  refused(t, usernameCaseMapped, 'a\u05d0', /rule 5 /);
  refused(t, usernameCaseMapped, 'a\u0661', /rule 5 /);
});

test('contextual rules of RFC 5892 appendix A', (t) => {
  const allowed = [
    'l\u00b7l', // A.3 middle dot between two l
    '\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645', // A.1 ZWNJ between joining letters (Persian)
    '\u0915\u094d\u200c\u0937', '\u0915\u094d\u200d\u0937', // A.1, A.2 after a virama
    '\u03b1\u0375\u03b2', // A.4 keraia before Greek
    '\u05d0\u05f3', // A.5 geresh after Hebrew
    '\u30ab\u30fb\u30ab', // A.7 katakana middle dot with kana
    '\u0628\u0661\u0662', '\u06f1\u06f2', // A.8, A.9 one kind of Arabic-Indic digits
  ];
  for (const s of allowed) t.is(usernameCaseMapped(s), s.normalize('NFC'), JSON.stringify(s));
  for (const s of ['a\u00b7b', 'a\u200cb', 'a\u200db', 'a\u0375b', 'a\u05f3', 'a\u30fbb', '\u0661\u06f1']) refused(t, usernameCaseMapped, s, /RFC 5892 appendix A/);
});

test('UsernameCaseMapped is idempotent', (t) => {
  for (const s of ['ＢＯＢ', 'ΟΔΥΣΣΕΥΣ', '\u0130stanbul', 'ｶﾞ', 'Cafe\u0301', '\u05d3\u05d5\u05d37']) {
    const once = usernameCaseMapped(s);
    t.is(usernameCaseMapped(once), once, JSON.stringify(s));
  }
});

test('OpaqueString: the examples of RFC 8265 §4.3, and no width or case mapping', (t) => {
  for (const s of ['correct horse battery staple', 'Correct Horse Battery Staple', '\u03c0\u00df\u00e5', 'Jack of \u2666s']) t.is(opaqueString(s), s);
  t.is(opaqueString('foo\u1680bar'), 'foo bar', 'non-ASCII spaces become U+0020');
  t.is(opaqueString('a\u00a0b\u3000c'), 'a b c');
  t.is(opaqueString('e\u0301'), '\u00e9', 'NFC');
  t.is(opaqueString(' my phone ♥ '), ' my phone ♥ ', 'spaces anywhere, symbols');
  t.is(opaqueString('ＰＨＯＮＥ'), 'ＰＨＯＮＥ', 'no width mapping');
  t.is(opaqueString('\ufb01'), '\ufb01', 'compatibility characters are FREE_PVAL');
  for (const bad of ['', 'my cat is a \u0009by', 'x\u200by', 'x\u00ady', '\u202ex', 'x\u0378', 'x\ue000']) refused(t, opaqueString, bad);
});

test('the committed tables are what scripts/precis-tables.ts generates from the Unicode data', async (t) => {
  const committed = readFileSync(new URL('../../src/xmpp/precis-tables.ts', import.meta.url), 'utf8');
  t.true(committed === await buildTables(), 'run npm run precis-tables');
});
