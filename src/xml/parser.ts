// The incremental XML stream parser (RFC 6120 §4, §11): raw socket bytes
// in, a stream header, top-level elements as ltx Elements, and a stream end
// out. One state machine over decoded text that keeps its state across
// chunks, so no input is ever scanned twice and a token split anywhere
// (even one byte at a time) costs nothing extra.
//
// ltx's own parser is not used: it decodes each chunk separately (breaking
// UTF-8 split across chunks), silently skips comments, PIs and DOCTYPEs,
// accepts unquoted and duplicate attributes, '<' in attribute values and
// mismatched end tags, throws out of write() on unknown entities, and
// re-concatenates its pending input on every write. Only ltx's Element is
// used, so the rest of the server sees ltx trees.
//
// Choices the RFC leaves open, made here:
// - Characters XML 1.0 forbids (C0 controls other than TAB/LF/CR, U+FFFE,
//   U+FFFF), directly or as character references, are 'not-well-formed'.
// - Invalid UTF-8 is 'not-well-formed', reported where it occurs: what
//   precedes it in the same chunk is parsed first, so the events never depend
//   on how the bytes were split. A UTF-16/UCS-4 byte pattern at the start of
//   a stream or an XML declaration naming another encoding is
//   'unsupported-encoding'. U+FEFF is never a byte order mark (RFC 6120
//   §11.6): before the stream header it is character data, hence
//   'not-well-formed'.
// - The XML declaration is accepted once per stream, before the stream
//   header, even after whitespace (strict XML wants it at byte 0; a client
//   may send a keepalive before restarting the stream).
// - CDATA sections are allowed inside stanzas (RFC 6120 §11.1 does not
//   restrict them) and join the surrounding text; at stream level they are
//   character data, hence 'not-well-formed'.
// - Namespace well-formedness is checked (the prefixes only on tags with a
//   colon somewhere, so plain tags cost nothing): QName syntax,
//   every element and attribute prefix bound (on the element, its ancestors
//   or the stream header), no undeclaring or rebinding of xml/xmlns, neither
//   of their namespaces as the default one, and no two attributes with one
//   expanded name (a:x and b:x with a and b bound to one namespace).
// - Line ends are normalised (CR LF and lone CR to LF) and attribute values
//   normalised (TAB, CR, LF to space) as XML 1.0 §2.11 and §3.3.3 require.
// - Top-level elements are emitted detached (parent null) with their
//   attributes as written: a stanza that inherits jabber:client from the
//   stream header has no xmlns attribute.
// - Besides its bytes, a stanza is bounded in elements and attributes (an
//   empty element is four bytes of input but a few hundred of memory): more
//   is a 'policy-violation', like too many bytes.
// - Names, attribute values and text are slices of the decoded chunk: an
//   element kept beyond its stanza keeps the whole chunk alive unless copied
//   with retain() (./retain.ts).
import { Element } from 'ltx';
import { isAscii } from 'node:buffer';

export type XmlErrorCondition =
  | 'not-well-formed'
  | 'restricted-xml'
  | 'policy-violation'
  | 'invalid-xml'
  | 'unsupported-encoding'
  | 'bad-namespace-prefix';

export interface StreamHandler {
  /** The stream header: its qualified name and attributes as written (xmlns declarations included). */
  streamStart(name: string, attrs: Record<string, string>): void;
  /**
   * A complete top-level element (a child of the stream root), and what it
   * costs to hold: its input bytes plus ELEMENT_COST per element and
   * ATTRIBUTE_COST per attribute it holds, a rough measure of its memory
   * for bounding what is buffered.
   */
  element(el: Element, cost: number): void;
  /** The stream's end tag. Further input is ignored until reset(). */
  streamEnd(): void;
  /** Fatal; the parser ignores further input until reset(). */
  error(condition: XmlErrorCondition, text: string): void;
  /** A container (StreamParserOptions.container) opened at stream level: its attributes as written. */
  containerStart?(name: string, attrs: Record<string, string>): void;
  /** The innermost open container closed. */
  containerEnd?(name: string): void;
}

export interface StreamParserOptions {
  /**
   * Largest top-level element (and stream header) in input bytes. Exceeding
   * it is a 'policy-violation', detected at the latest at the end of the
   * chunk that crosses it, so at most maxStanzaBytes plus one chunk is held.
   */
  maxStanzaBytes: number;
  /** Deepest element nesting inside a stanza (default 128); deeper is a 'policy-violation'. */
  maxDepth?: number;
  /**
   * Most elements one top-level element may hold, itself included (default
   * 4096), and four times that many attributes (the stream header's
   * attributes too); more is a 'policy-violation', detected as the element
   * or attribute beyond the bound is read.
   */
  maxStanzaElements?: number;
  /**
   * For documents rather than streams (an XEP-0227 export): an element
   * opened at stream level for which this is true is no top-level element
   * but a container of them, reported by containerStart and containerEnd,
   * and its children are the top-level elements, each bounded as above. At
   * most MAX_CONTAINERS deep; the root is never one.
   */
  container?: (name: string, attrs: Record<string, string>) => boolean;
}

/** Nesting of containers (StreamParserOptions.container) beyond which elements are top-level ones again. */
export const MAX_CONTAINERS = 8;

/**
 * Memory of one parsed element beyond its input bytes, roughly: its ltx
 * Element, attributes object and children array, and its slot in its
 * parent's (measured at 150 bytes for an empty element, 300 with content).
 */
export const ELEMENT_COST = 256;
/** The same for one attribute (measured at 40 to 65 bytes). */
export const ATTRIBUTE_COST = 64;

const NS_XML = 'http://www.w3.org/XML/1998/namespace';
const NS_XMLNS = 'http://www.w3.org/2000/xmlns/';

// States.
const S_TEXT = 0; // character data: stream level (cur === null) or inside a stanza
const S_LT = 1; // after '<'
const S_STAG_NAME = 2;
const S_STAG = 3; // in a start tag, after the name or whitespace
const S_ATTR_NAME = 4;
const S_ATTR_EQ = 5; // after an attribute name, expecting '='
const S_ATTR_QUOTE = 6; // after '=', expecting a quote
const S_ATTR_VALUE = 7;
const S_AFTER_VALUE = 8; // after a closing quote: whitespace, '/' or '>'
const S_EMPTY = 9; // after '/' in a start tag, expecting '>'
const S_ETAG_NAME = 10;
const S_ETAG = 11; // after an end tag name, expecting '>'
const S_BANG = 12; // after '<!'
const S_CDATA = 13;
const S_PI_TARGET = 14; // '<?' before the stream header
const S_XMLDECL = 15; // inside '<?xml', up to '?>'
const S_REF = 16; // inside '&...;'
const S_DONE = 17; // failed, ended or stream closed: input ignored

// ASCII character classes.
const C_WS = 1;
const C_NSTART = 2;
const C_NCHAR = 4;
const CT = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c);
  if (/[A-Za-z_:]/.test(ch)) CT[c] = C_NSTART | C_NCHAR;
  else if (/[0-9.-]/.test(ch)) CT[c] = C_NCHAR;
  else if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r') CT[c] = C_WS;
}

/** XML 1.0 NameStartChar for a UTF-16 code unit >= 0x80 (surrogates: U+10000–U+EFFFF). */
function isNameStartHi(c: number): boolean {
  return (
    (c >= 0xc0 && c <= 0xd6) ||
    (c >= 0xd8 && c <= 0xf6) ||
    (c >= 0xf8 && c <= 0x2ff) ||
    (c >= 0x370 && c <= 0x37d) ||
    (c >= 0x37f && c <= 0x1fff) ||
    c === 0x200c ||
    c === 0x200d ||
    (c >= 0x2070 && c <= 0x218f) ||
    (c >= 0x2c00 && c <= 0x2fef) ||
    (c >= 0x3001 && c <= 0xdb7f) || // up to high surrogates of planes 1–14
    (c >= 0xdc00 && c <= 0xdfff) || // low surrogates (always paired in valid UTF-8)
    (c >= 0xf900 && c <= 0xfdcf) ||
    (c >= 0xfdf0 && c <= 0xfffd)
  );
}

function isNameCharHi(c: number): boolean {
  return isNameStartHi(c) || c === 0xb7 || (c >= 0x300 && c <= 0x36f) || c === 0x203f || c === 0x2040;
}

function isNameStart(c: number): boolean {
  return c < 128 ? (CT[c] & C_NSTART) !== 0 : isNameStartHi(c);
}

function isXmlChar(cp: number): boolean {
  return (
    cp === 0x9 ||
    cp === 0xa ||
    cp === 0xd ||
    (cp >= 0x20 && cp <= 0xd7ff) ||
    (cp >= 0xe000 && cp <= 0xfffd) ||
    (cp >= 0x10000 && cp <= 0x10ffff)
  );
}

// Scanners: each stops at the next character needing attention. Lone
// surrogates need no check: valid UTF-8 cannot encode them.
/* eslint-disable no-control-regex -- matching the characters XML forbids */
const TEXT_RE = /[<&\]\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/g;
const CDATA_RE = /[\]\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/g;
const ATTR_DQ_RE = /["<&\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/g;
const ATTR_SQ_RE = /['<&\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/g;
/* eslint-enable no-control-regex */
const XMLDECL_RE =
  /^[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(?:'1\.[0-9]+'|"1\.[0-9]+")(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(?:'[A-Za-z][A-Za-z0-9._-]*'|"[A-Za-z][A-Za-z0-9._-]*"))?(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(?:'(?:yes|no)'|"(?:yes|no)"))?[ \t\r\n]*$/;
const ENCODING_RE = /[ \t\r\n]encoding[ \t\r\n]*=[ \t\r\n]*(["'])([^"']*)\1/;

/** Stateless (never given { stream: true }), so one serves every parser of the thread. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Length of the longest prefix of b that does not end inside a UTF-8
 * sequence: what can be decoded now, the rest (at most 3 bytes) waiting for
 * the next chunk. Invalid bytes stay in the prefix, for the decoder to reject.
 */
function completeLength(b: Uint8Array): number {
  const n = b.length;
  // The last byte that is not a continuation byte, within a sequence's reach.
  for (let i = n - 1; i >= 0 && i >= n - 4; i--) {
    const c = b[i];
    if ((c & 0xc0) === 0x80) continue;
    const need = c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    return i + need > n ? i : n;
  }
  return n;
}

/** Length of the longest prefix of b made of whole, valid UTF-8 sequences (RFC 3629 §4). */
function validUtf8Length(b: Uint8Array): number {
  const n = b.length;
  let i = 0;
  while (i < n) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    // The lead byte gives the length; it also narrows the second byte's range
    // (no overlong forms, no surrogates, nothing above U+10FFFF).
    let len: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c === 0xe0) lo = 0xa0;
      else if (c === 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c === 0xf0) lo = 0x90;
      else if (c === 0xf4) hi = 0x8f;
    } else return i;
    if (i + len > n || b[i + 1] < lo || b[i + 1] > hi) return i;
    for (let k = 2; k < len; k++) if ((b[i + k] & 0xc0) !== 0x80) return i;
    i += len;
  }
  return n;
}

function clip(s: string): string {
  return s.length > 40 ? s.slice(0, 40) + '…' : s;
}

function describe(c: number): string {
  return 'U+' + c.toString(16).toUpperCase().padStart(4, '0');
}

export class StreamParser {
  private readonly handler: StreamHandler;
  private readonly maxBytes: number;
  private readonly maxDepth: number;
  private readonly maxElements: number;
  private readonly maxAttributes: number;
  /**
   * The start of a UTF-8 sequence that the last chunk ended in (1–3 bytes,
   * copied), completed by the next one. Decoding is stateless otherwise: a
   * TextDecoder per connection would cost about 1 KB of native memory each.
   */
  private carry: Uint8Array | null = null;

  /** Bumped by reset(), end() and every error: run() stops when it changes. */
  private gen = 0;
  private ended = false;
  private st = S_TEXT;
  /** The current chunk is pure ASCII: character offsets are byte offsets. */
  private ascii = true;
  /** Bytes of the current stream seen so far, up to 2 (encoding sniffing). */
  private head = 0;

  private rootOpen = false;
  private rootName = '';
  private rootAttrs: Record<string, string> | null = null;
  private declSeen = false;
  private readonly container: StreamParserOptions['container'];
  /** Open containers, outermost first. */
  private containers: { name: string; attrs: Record<string, string> }[] = [];

  /** The open element of the stanza being built (null at stream level). */
  private cur: Element | null = null;
  private depth = 0;

  // Token accumulators (each holds at most one token's text).
  private text = '';
  private name = '';
  private tagName = '';
  private attrs: Record<string, string> = {};
  private nsCheck = false;
  private attrName = '';
  private value = '';
  private quote = 0;
  private ref = '';
  private refReturn = S_TEXT;
  private bang = '';
  private decl = '';
  /** Consecutive ']' just before the text position (for ']]>' in character data). */
  private brackets = 0;
  /** ']' held at a chunk end inside CDATA (they may start ']]>'). */
  private cdataBrackets = 0;
  /** A CR ended the last chunk: an LF starting the next one is part of it. */
  private crSkip = false;

  // The current "unit" (stream header, XML declaration, top-level element or
  // stream end tag) and its size so far.
  private inUnit = false;
  private unitStart = 0;
  private unitBytes = 0;
  /** Elements and attributes of the current unit so far. */
  private elements = 0;
  private attributes = 0;

  constructor(handler: StreamHandler, options: StreamParserOptions) {
    if (!(options.maxStanzaBytes > 0)) throw new RangeError('maxStanzaBytes must be positive');
    this.handler = handler;
    this.maxBytes = options.maxStanzaBytes;
    this.maxDepth = options.maxDepth ?? 128;
    this.maxElements = options.maxStanzaElements ?? 4096;
    if (!(this.maxElements > 0)) throw new RangeError('maxStanzaElements must be positive');
    this.maxAttributes = 4 * this.maxElements;
    this.container = options.container;
  }

  /** Feeds raw bytes from the transport. Callbacks run synchronously from here. */
  write(chunk: Uint8Array): void {
    if (this.st === S_DONE || chunk.length === 0) return;
    if (this.head < 2 && !this.sniff(chunk)) return;
    let bytes = chunk;
    if (this.carry !== null) {
      bytes = Buffer.concat([this.carry, chunk]);
      this.carry = null;
    }
    const end = completeLength(bytes);
    if (end < bytes.length) {
      this.carry = new Uint8Array(bytes.subarray(end)); // a copy: a view would keep the whole chunk
      bytes = bytes.subarray(0, end);
      if (end === 0) return;
    }
    // Decoded as a whole: invalid UTF-8 is not replaced, it is an error.
    let s: string;
    try {
      s = UTF8.decode(bytes);
    } catch {
      // What precedes the bad sequence is parsed first, as it would have been
      // had it come in a chunk of its own: the events must not depend on
      // where the transport split the bytes.
      const good = bytes.subarray(0, validUtf8Length(bytes));
      const gen = this.gen;
      if (good.length > 0) {
        this.ascii = isAscii(good);
        this.run(UTF8.decode(good));
      }
      if (this.gen === gen) this.fail('not-well-formed', 'invalid UTF-8');
      return;
    }
    this.ascii = isAscii(bytes);
    this.run(s);
  }

  /**
   * Forgets everything and expects a fresh stream (header, optionally
   * preceded by an XML declaration): the restart after STARTTLS or SASL
   * success, and the way out of an error or a closed stream. Called from a
   * handler callback, the rest of the chunk being parsed is discarded (it
   * was sent before the peer could know of the restart).
   */
  reset(): void {
    if (this.ended) return;
    this.gen++;
    this.carry = null;
    this.st = S_TEXT;
    this.head = 0;
    this.rootOpen = false;
    this.rootName = '';
    this.rootAttrs = null;
    this.declSeen = false;
    this.containers = [];
    this.clearTokens();
  }

  /**
   * Whether the input so far ends between top-level elements: nothing of
   * one is pending (a framed transport's message must hold whole elements).
   */
  get atStreamLevel(): boolean {
    return this.st === S_TEXT && this.cur === null && !this.inUnit && this.carry === null;
  }

  /** The transport is gone: drops all state; no callbacks, later input ignored. */
  end(): void {
    this.gen++;
    this.ended = true;
    this.carry = null;
    this.st = S_DONE;
    this.rootAttrs = null;
    this.clearTokens();
  }

  private clearTokens(): void {
    this.cur = null;
    this.depth = 0;
    this.text = '';
    this.name = '';
    this.tagName = '';
    this.attrs = {};
    this.nsCheck = false;
    this.attrName = '';
    this.value = '';
    this.ref = '';
    this.bang = '';
    this.decl = '';
    this.brackets = 0;
    this.cdataBrackets = 0;
    this.crSkip = false;
    this.inUnit = false;
    this.unitStart = 0;
    this.unitBytes = 0;
    this.elements = 0;
    this.attributes = 0;
  }

  private fail(condition: XmlErrorCondition, text: string): void {
    this.gen++;
    this.st = S_DONE;
    this.clearTokens();
    this.handler.error(condition, text);
  }

  /** Rejects UTF-16 and UCS-4 by their first two bytes (XML 1.0 Appendix F). */
  private sniff(chunk: Uint8Array): boolean {
    for (let k = 0; k < chunk.length && this.head < 2; k++, this.head++) {
      const b = chunk[k];
      // UTF-8 XML starts with neither 00, FE nor FF, nor has 00 second.
      if (b === 0x00 || (this.head === 0 && (b === 0xfe || b === 0xff))) {
        this.fail('unsupported-encoding', 'the stream is not UTF-8');
        return false;
      }
    }
    return true;
  }

  private run(s: string): void {
    const n = s.length;
    const gen = this.gen;
    let i = 0;
    if (this.crSkip) {
      this.crSkip = false;
      if (s.charCodeAt(0) === 10) i = 1;
    }
    while (i < n) {
      switch (this.st) {
        case S_TEXT:
          i = this.cur !== null ? this.content(s, i, n) : this.streamLevel(s, i, n);
          break;
        case S_LT:
          i = this.lt(s, i);
          break;
        case S_STAG_NAME:
          i = this.startTagName(s, i, n);
          break;
        case S_STAG:
          i = this.inStartTag(s, i, n);
          break;
        case S_ATTR_NAME:
          i = this.attributeName(s, i, n);
          break;
        case S_ATTR_EQ:
          i = this.attributeEq(s, i, n);
          break;
        case S_ATTR_QUOTE:
          i = this.attributeQuote(s, i, n);
          break;
        case S_ATTR_VALUE:
          i = this.attributeValue(s, i, n);
          break;
        case S_AFTER_VALUE:
          i = this.afterValue(s, i);
          break;
        case S_EMPTY:
          if (s.charCodeAt(i) !== 62) {
            this.fail('not-well-formed', "expected '>' after '/' in a start tag");
            return;
          }
          i = this.openTag(s, i, true);
          break;
        case S_ETAG_NAME:
          i = this.endTagName(s, i, n);
          break;
        case S_ETAG:
          i = this.inEndTag(s, i, n);
          break;
        case S_BANG:
          i = this.markupDecl(s, i, n);
          break;
        case S_CDATA:
          i = this.cdata(s, i, n);
          break;
        case S_PI_TARGET:
          i = this.piTarget(s, i, n);
          break;
        case S_XMLDECL:
          i = this.xmlDecl(s, i, n);
          break;
        case S_REF:
          i = this.reference(s, i, n);
          break;
        default: // S_DONE
          return;
      }
      if (this.gen !== gen) return;
    }
    if (this.inUnit) {
      this.unitBytes += this.byteLength(s, this.unitStart, n);
      this.unitStart = 0;
      if (this.unitBytes > this.maxBytes) this.tooBig(this.unitBytes);
    }
  }

  private byteLength(s: string, a: number, b: number): number {
    if (this.ascii) return b - a;
    return Buffer.byteLength(a === 0 && b === s.length ? s : s.slice(a, b));
  }

  private tooBig(bytes: number): void {
    this.fail('policy-violation', `stanza exceeds ${this.maxBytes} bytes (${bytes} so far)`);
  }

  /** Closes the current unit at offset e: its size in bytes, or -1 (after failing) if it is too large. */
  private endUnit(s: string, e: number): number {
    const bytes = this.unitBytes + this.byteLength(s, this.unitStart, e);
    this.inUnit = false;
    this.unitBytes = 0;
    if (bytes > this.maxBytes) {
      this.tooBig(bytes);
      return -1;
    }
    return bytes;
  }

  private cost(bytes: number): number {
    return bytes + this.elements * ELEMENT_COST + this.attributes * ATTRIBUTE_COST;
  }

  /** Between top-level elements (or before the header): whitespace only. */
  private streamLevel(s: string, i: number, n: number): number {
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c === 60) {
        this.inUnit = true;
        this.unitStart = i;
        this.unitBytes = 0;
        this.elements = 0;
        this.attributes = 0;
        this.st = S_LT;
        return i + 1;
      }
      if (c >= 128 || (CT[c] & C_WS) === 0) {
        this.fail(
          'not-well-formed',
          this.rootOpen ? 'character data at stream level' : `${describe(c)} before the stream header`,
        );
        return n;
      }
    }
    return n;
  }

  /** Character data inside a stanza. */
  private content(s: string, i: number, n: number): number {
    if (this.brackets >= 2 && s.charCodeAt(i) === 62) {
      this.fail('not-well-formed', "']]>' in character data");
      return n;
    }
    const re = TEXT_RE;
    while (i < n) {
      re.lastIndex = i;
      if (!re.test(s)) {
        this.text += s.slice(i);
        this.brackets = 0;
        return n;
      }
      const j = re.lastIndex - 1;
      if (j > i) {
        this.text += s.slice(i, j);
        this.brackets = 0;
      }
      const c = s.charCodeAt(j);
      if (c === 60) {
        this.st = S_LT;
        return j + 1;
      }
      if (c === 38) {
        this.ref = '';
        this.refReturn = S_TEXT;
        this.st = S_REF;
        return j + 1;
      }
      if (c === 93) {
        let k = j + 1;
        while (k < n && s.charCodeAt(k) === 93) k++;
        this.text += s.slice(j, k);
        this.brackets += k - j;
        if (k < n && this.brackets >= 2 && s.charCodeAt(k) === 62) {
          this.fail('not-well-formed', "']]>' in character data");
          return n;
        }
        i = k;
        continue;
      }
      if (c === 13) {
        this.text += '\n';
        this.brackets = 0;
        i = j + 1;
        if (i === n) this.crSkip = true;
        else if (s.charCodeAt(i) === 10) i++;
        continue;
      }
      this.fail('not-well-formed', `illegal character ${describe(c)}`);
      return n;
    }
    return n;
  }

  private flushText(): void {
    if (this.text !== '') {
      (this.cur as Element).children.push(this.text);
      this.text = '';
    }
  }

  /** After '<'. */
  private lt(s: string, i: number): number {
    const c = s.charCodeAt(i);
    this.brackets = 0;
    if (c === 47) {
      if (!this.rootOpen) {
        this.fail('not-well-formed', 'end tag before the stream header');
        return i;
      }
      if (this.cur !== null) this.flushText();
      this.name = '';
      this.st = S_ETAG_NAME;
      return i + 1;
    }
    if (c === 33) {
      this.bang = '';
      this.st = S_BANG;
      return i + 1;
    }
    if (c === 63) {
      if (this.rootOpen || this.declSeen) {
        this.fail('restricted-xml', 'processing instruction');
        return i;
      }
      this.name = '';
      this.st = S_PI_TARGET;
      return i + 1;
    }
    if (isNameStart(c)) {
      if (this.cur !== null) this.flushText();
      this.name = '';
      this.st = S_STAG_NAME;
      return i;
    }
    this.fail('not-well-formed', `illegal character ${describe(c)} after '<'`);
    return i;
  }

  /**
   * Scans a name into this.name; returns the offset of the character that
   * ends it, or n when the name may continue in the next chunk, or -1 after
   * failing on an illegal first character.
   */
  private scanName(s: string, i: number, n: number): number {
    let j = i;
    if (this.name === '') {
      const c = s.charCodeAt(j);
      if (!isNameStart(c)) {
        this.fail('not-well-formed', `illegal character ${describe(c)} at the start of a name`);
        return -1;
      }
      j++;
    }
    for (; j < n; j++) {
      const c = s.charCodeAt(j);
      if (c < 128 ? (CT[c] & C_NCHAR) === 0 : !isNameCharHi(c)) break;
    }
    this.name += s.slice(i, j);
    return j;
  }

  private startTagName(s: string, i: number, n: number): number {
    const j = this.scanName(s, i, n);
    if (j < 0 || j === n) return n;
    const c = s.charCodeAt(j);
    if (c !== 62 && c !== 47 && (c >= 128 || (CT[c] & C_WS) === 0)) {
      this.fail('not-well-formed', `illegal character ${describe(c)} in element name`);
      return n;
    }
    this.tagName = this.name;
    this.nsCheck = this.name.indexOf(':') >= 0;
    this.attrs = {};
    this.st = S_STAG;
    return j;
  }

  private inStartTag(s: string, i: number, n: number): number {
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < 128 && (CT[c] & C_WS) !== 0) continue;
      if (c === 62) return this.openTag(s, i, false);
      if (c === 47) {
        this.st = S_EMPTY;
        return i + 1;
      }
      if (isNameStart(c)) {
        this.name = '';
        this.st = S_ATTR_NAME;
        return i;
      }
      this.fail('not-well-formed', `illegal character ${describe(c)} in start tag <${clip(this.tagName)}>`);
      return n;
    }
    return n;
  }

  private attributeName(s: string, i: number, n: number): number {
    const j = this.scanName(s, i, n);
    if (j < 0 || j === n) return n;
    const c = s.charCodeAt(j);
    if (c !== 61 && (c >= 128 || (CT[c] & C_WS) === 0)) {
      this.fail('not-well-formed', `attribute ${clip(this.name)} without a value`);
      return n;
    }
    const name = this.name;
    if (Object.hasOwn(this.attrs, name)) {
      this.fail('not-well-formed', `duplicate attribute ${clip(name)}`);
      return n;
    }
    if (++this.attributes > this.maxAttributes) {
      this.fail('policy-violation', `${this.rootOpen ? 'stanza' : 'stream header'} has more than ${this.maxAttributes} attributes`);
      return n;
    }
    if (name.indexOf(':') >= 0) this.nsCheck = true;
    this.attrName = name;
    this.st = S_ATTR_EQ;
    return j;
  }

  private attributeEq(s: string, i: number, n: number): number {
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c === 61) {
        this.st = S_ATTR_QUOTE;
        return i + 1;
      }
      if (c >= 128 || (CT[c] & C_WS) === 0) {
        this.fail('not-well-formed', `attribute ${clip(this.attrName)} without a value`);
        return n;
      }
    }
    return n;
  }

  private attributeQuote(s: string, i: number, n: number): number {
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c === 34 || c === 39) {
        this.quote = c;
        this.value = '';
        this.st = S_ATTR_VALUE;
        return i + 1;
      }
      if (c >= 128 || (CT[c] & C_WS) === 0) {
        this.fail('not-well-formed', `value of attribute ${clip(this.attrName)} is not quoted`);
        return n;
      }
    }
    return n;
  }

  private attributeValue(s: string, i: number, n: number): number {
    const re = this.quote === 34 ? ATTR_DQ_RE : ATTR_SQ_RE;
    while (i < n) {
      re.lastIndex = i;
      if (!re.test(s)) {
        this.value += s.slice(i);
        return n;
      }
      const j = re.lastIndex - 1;
      if (j > i) this.value += s.slice(i, j);
      const c = s.charCodeAt(j);
      if (c === this.quote) {
        const name = this.attrName;
        // Namespaces in XML 1.0 §3: neither namespace may be the default one.
        if (name === 'xmlns' && (this.value === NS_XML || this.value === NS_XMLNS)) {
          this.fail('not-well-formed', `illegal default namespace declaration xmlns='${this.value}'`);
          return n;
        }
        if (name === '__proto__') {
          Object.defineProperty(this.attrs, name, { value: this.value, enumerable: true, writable: true, configurable: true });
        } else {
          this.attrs[name] = this.value;
        }
        this.value = '';
        this.st = S_AFTER_VALUE;
        return j + 1;
      }
      if (c === 38) {
        this.ref = '';
        this.refReturn = S_ATTR_VALUE;
        this.st = S_REF;
        return j + 1;
      }
      if (c === 60) {
        this.fail('not-well-formed', `'<' in the value of attribute ${clip(this.attrName)}`);
        return n;
      }
      if (c === 9 || c === 10) {
        this.value += ' ';
        i = j + 1;
        continue;
      }
      if (c === 13) {
        this.value += ' ';
        i = j + 1;
        if (i === n) this.crSkip = true;
        else if (s.charCodeAt(i) === 10) i++;
        continue;
      }
      this.fail('not-well-formed', `illegal character ${describe(c)} in attribute ${clip(this.attrName)}`);
      return n;
    }
    return n;
  }

  private afterValue(s: string, i: number): number {
    const c = s.charCodeAt(i);
    if (c === 62) return this.openTag(s, i, false);
    if (c === 47) {
      this.st = S_EMPTY;
      return i + 1;
    }
    if (c < 128 && (CT[c] & C_WS) !== 0) {
      this.st = S_STAG;
      return i + 1;
    }
    this.fail('not-well-formed', `missing whitespace after attribute ${clip(this.attrName)}`);
    return i;
  }

  /** The start tag ends at s[i] ('>'). */
  private openTag(s: string, i: number, selfClosing: boolean): number {
    const name = this.tagName;
    const attrs = this.attrs;
    this.attrs = {};
    if (this.nsCheck && !this.checkNamespaces(name, attrs)) return i;
    this.st = S_TEXT;
    if (!this.rootOpen) {
      this.rootOpen = true;
      this.rootName = name;
      this.rootAttrs = attrs;
      if (this.endUnit(s, i + 1) < 0) return i;
      const gen = this.gen;
      this.handler.streamStart(name, attrs);
      if (selfClosing && this.gen === gen) {
        this.st = S_DONE;
        this.handler.streamEnd();
      }
      return i + 1;
    }
    if (this.container !== undefined && this.cur === null && this.containers.length < MAX_CONTAINERS && this.container(name, attrs)) {
      if (this.endUnit(s, i + 1) < 0) return i;
      const gen = this.gen;
      this.handler.containerStart?.(name, attrs);
      if (selfClosing) {
        if (this.gen === gen) this.handler.containerEnd?.(name);
      } else this.containers.push({ name, attrs });
      return i + 1;
    }
    if (++this.elements > this.maxElements) {
      this.fail('policy-violation', `stanza has more than ${this.maxElements} elements`);
      return i;
    }
    const el = new Element(name);
    el.attrs = attrs;
    const parent = this.cur;
    if (parent === null) {
      if (selfClosing) {
        const bytes = this.endUnit(s, i + 1);
        if (bytes >= 0) this.handler.element(el, this.cost(bytes));
        return i + 1;
      }
      this.cur = el;
      this.depth = 1;
      return i + 1;
    }
    el.parent = parent;
    parent.children.push(el);
    if (!selfClosing) {
      if (++this.depth > this.maxDepth) {
        this.fail('policy-violation', `elements nested deeper than ${this.maxDepth}`);
        return i;
      }
      this.cur = el;
    }
    return i + 1;
  }

  /** Namespaces in XML 1.0 §3–§5, for a tag with a colon somewhere. */
  private checkNamespaces(name: string, attrs: Record<string, string>): boolean {
    let prefixed: string[] | null = null;
    for (const key in attrs) {
      if (key.startsWith('xmlns:')) {
        const prefix = key.slice(6);
        const uri = attrs[key];
        if (!this.isQName(key)) return false;
        if (prefix === 'xmlns' || uri === NS_XMLNS || (prefix === 'xml') !== (uri === NS_XML) || uri === '') {
          this.fail('not-well-formed', `illegal namespace declaration ${clip(key)}='${clip(uri)}'`);
          return false;
        }
      } else if (key.indexOf(':') >= 0) {
        if (!this.isQName(key)) return false;
        const prefix = key.slice(0, key.indexOf(':'));
        if (prefix !== 'xml' && this.lookup(prefix, attrs) === undefined) {
          this.fail('not-well-formed', `unbound namespace prefix in attribute ${clip(key)}`);
          return false;
        }
        (prefixed ??= []).push(key);
      }
    }
    if (prefixed !== null && prefixed.length > 1 && !this.distinctExpandedNames(prefixed, attrs)) return false;
    const colon = name.indexOf(':');
    if (colon >= 0) {
      if (!this.isQName(name)) return false;
      const prefix = name.slice(0, colon);
      if (prefix === 'xmlns' || (prefix !== 'xml' && this.lookup(prefix, attrs) === undefined)) {
        // RFC 6120 §4.9.3.2 gives exactly this, on the stream header, as its example.
        this.fail(this.rootOpen ? 'not-well-formed' : 'bad-namespace-prefix', `unbound namespace prefix in element ${clip(name)}`);
        return false;
      }
    }
    return true;
  }

  private isQName(name: string): boolean {
    const colon = name.indexOf(':');
    if (colon > 0 && colon < name.length - 1 && name.indexOf(':', colon + 1) < 0 && isNameStart(name.charCodeAt(colon + 1))) {
      return true;
    }
    this.fail('not-well-formed', `malformed qualified name ${clip(name)}`);
    return false;
  }

  /** Namespaces in XML 1.0 §6.3: no two attributes of a tag may have the same local name and namespace. */
  private distinctExpandedNames(keys: string[], attrs: Record<string, string>): boolean {
    const seen = new Set<string>();
    for (const key of keys) {
      const colon = key.indexOf(':');
      const prefix = key.slice(0, colon);
      const uri = prefix === 'xml' ? NS_XML : this.lookup(prefix, attrs)!;
      // A local name has no '\n': the key is unambiguous whatever the namespace name holds.
      const expanded = uri + '\n' + key.slice(colon + 1);
      if (seen.has(expanded)) {
        this.fail('not-well-formed', `attribute ${clip(key)} repeats another attribute's expanded name`);
        return false;
      }
      seen.add(expanded);
    }
    return true;
  }

  /** The namespace bound to `prefix` where the tag with `attrs` opens (the nearest declaration), if any. */
  private lookup(prefix: string, attrs: Record<string, string>): string | undefined {
    const key = 'xmlns:' + prefix;
    if (attrs[key] !== undefined) return attrs[key];
    for (let e = this.cur; e !== null; e = e.parent) if (e.attrs[key] !== undefined) return e.attrs[key];
    for (let c = this.containers.length - 1; c >= 0; c--) if (this.containers[c].attrs[key] !== undefined) return this.containers[c].attrs[key];
    return this.rootAttrs !== null ? this.rootAttrs[key] : undefined;
  }

  private endTagName(s: string, i: number, n: number): number {
    const j = this.scanName(s, i, n);
    if (j < 0 || j === n) return n;
    const c = s.charCodeAt(j);
    if (c === 62) return this.closeTag(s, j);
    if (c < 128 && (CT[c] & C_WS) !== 0) {
      this.st = S_ETAG;
      return j;
    }
    this.fail('not-well-formed', `illegal character ${describe(c)} in end tag`);
    return n;
  }

  private inEndTag(s: string, i: number, n: number): number {
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c === 62) return this.closeTag(s, i);
      if (c >= 128 || (CT[c] & C_WS) === 0) {
        this.fail('not-well-formed', `illegal character ${describe(c)} in end tag`);
        return n;
      }
    }
    return n;
  }

  /** The end tag named this.name ends at s[i]. */
  private closeTag(s: string, i: number): number {
    const name = this.name;
    const el = this.cur;
    this.st = S_TEXT;
    if (el === null && this.containers.length > 0) {
      const open = this.containers[this.containers.length - 1];
      if (name !== open.name) {
        this.fail('not-well-formed', `end tag </${clip(name)}> does not match <${clip(open.name)}>`);
        return i;
      }
      if (this.endUnit(s, i + 1) < 0) return i;
      this.containers.pop();
      this.handler.containerEnd?.(name);
      return i + 1;
    }
    if (el === null) {
      if (name !== this.rootName) {
        this.fail('not-well-formed', `end tag </${clip(name)}> does not match <${clip(this.rootName)}>`);
        return i;
      }
      if (this.endUnit(s, i + 1) < 0) return i;
      this.st = S_DONE;
      this.handler.streamEnd();
      return i + 1;
    }
    if (name !== el.name) {
      this.fail('not-well-formed', `end tag </${clip(name)}> does not match <${clip(el.name)}>`);
      return i;
    }
    const parent = el.parent;
    if (parent !== null) {
      this.cur = parent;
      this.depth--;
      return i + 1;
    }
    this.cur = null;
    this.depth = 0;
    const bytes = this.endUnit(s, i + 1);
    if (bytes >= 0) this.handler.element(el, this.cost(bytes));
    return i + 1;
  }

  /** After '<!': a CDATA section, or a comment or DOCTYPE (restricted). */
  private markupDecl(s: string, i: number, n: number): number {
    while (i < n) {
      const b = (this.bang += s[i++]);
      if (b === '-') continue;
      if (b === '--') {
        this.fail('restricted-xml', 'comment');
        return n;
      }
      if ('[CDATA['.startsWith(b)) {
        if (b.length < 7) continue;
        if (this.cur === null) {
          this.fail('not-well-formed', 'CDATA section at stream level');
          return n;
        }
        this.cdataBrackets = 0;
        this.st = S_CDATA;
        return i;
      }
      if ('DOCTYPE'.startsWith(b)) {
        if (b.length < 7) continue;
        this.fail('restricted-xml', 'document type declaration');
        return n;
      }
      this.fail('not-well-formed', `illegal markup <!${clip(b)}`);
      return n;
    }
    return n;
  }

  private cdata(s: string, i: number, n: number): number {
    const re = CDATA_RE;
    while (i < n) {
      let j: number;
      if (this.cdataBrackets > 0) {
        j = i;
      } else {
        re.lastIndex = i;
        if (!re.test(s)) {
          this.text += s.slice(i);
          return n;
        }
        j = re.lastIndex - 1;
        if (j > i) this.text += s.slice(i, j);
      }
      const c = s.charCodeAt(j);
      if (c === 93 || this.cdataBrackets > 0) {
        let k = j;
        while (k < n && s.charCodeAt(k) === 93) k++;
        const run = this.cdataBrackets + (k - j);
        this.cdataBrackets = 0;
        if (k === n) {
          this.cdataBrackets = run;
          return n;
        }
        if (run >= 2 && s.charCodeAt(k) === 62) {
          if (run > 2) this.text += ']'.repeat(run - 2);
          this.st = S_TEXT;
          return k + 1;
        }
        this.text += ']'.repeat(run);
        i = k;
        continue;
      }
      if (c === 13) {
        this.text += '\n';
        i = j + 1;
        if (i === n) this.crSkip = true;
        else if (s.charCodeAt(i) === 10) i++;
        continue;
      }
      this.fail('not-well-formed', `illegal character ${describe(c)} in CDATA section`);
      return n;
    }
    return n;
  }

  /** After '<?' before the stream header: only the XML declaration is allowed. */
  private piTarget(s: string, i: number, n: number): number {
    const j = this.scanName(s, i, n);
    if (j < 0 || j === n) return n;
    if (this.name !== 'xml') {
      this.fail('restricted-xml', `processing instruction <?${clip(this.name)}`);
      return n;
    }
    this.decl = '';
    this.st = S_XMLDECL;
    return j;
  }

  private xmlDecl(s: string, i: number, n: number): number {
    const before = this.decl.length;
    this.decl += s.slice(i);
    const k = this.decl.indexOf('?>', before > 0 ? before - 1 : 0);
    if (k < 0) return n;
    const body = this.decl.slice(0, k);
    const end = i + (k + 2 - before);
    this.decl = '';
    const enc = ENCODING_RE.exec(body);
    if (enc !== null && enc[2].toLowerCase() !== 'utf-8') {
      this.fail('unsupported-encoding', `encoding '${clip(enc[2])}' declared; only UTF-8 is allowed`);
      return n;
    }
    if (!XMLDECL_RE.test(body)) {
      this.fail('not-well-formed', 'malformed XML declaration');
      return n;
    }
    this.declSeen = true;
    this.st = S_TEXT;
    if (this.endUnit(s, end) < 0) return n;
    return end;
  }

  /** After '&', in text or an attribute value. */
  private reference(s: string, i: number, n: number): number {
    let j = i;
    for (; j < n; j++) {
      const c = s.charCodeAt(j);
      if (c === 59) break;
      if (c < 128 ? (CT[c] & C_NCHAR) === 0 && c !== 35 : !isNameCharHi(c)) {
        this.fail('not-well-formed', `illegal character ${describe(c)} in reference &${clip(this.ref + s.slice(i, j))}`);
        return n;
      }
    }
    this.ref += s.slice(i, j);
    if (j === n) return n;
    const r = this.resolve(this.ref);
    if (r === null) return n;
    this.ref = '';
    if (this.refReturn === S_TEXT) {
      this.text += r;
      this.brackets = 0;
    } else {
      this.value += r;
    }
    this.st = this.refReturn;
    return j + 1;
  }

  private resolve(ref: string): string | null {
    switch (ref) {
      case 'lt':
        return '<';
      case 'gt':
        return '>';
      case 'amp':
        return '&';
      case 'quot':
        return '"';
      case 'apos':
        return "'";
    }
    if (ref.charCodeAt(0) === 35) {
      let cp: number;
      if (/^#x[0-9A-Fa-f]+$/.test(ref)) cp = parseInt(ref.slice(2), 16);
      else if (/^#[0-9]+$/.test(ref)) cp = parseInt(ref.slice(1), 10);
      else {
        this.fail('not-well-formed', `malformed character reference &${clip(ref)};`);
        return null;
      }
      if (!isXmlChar(cp)) {
        this.fail('not-well-formed', `reference to an illegal character &${clip(ref)};`);
        return null;
      }
      return String.fromCodePoint(cp);
    }
    if (ref !== '' && isNameStart(ref.charCodeAt(0)) && ref.indexOf('#') < 0) {
      this.fail('restricted-xml', `entity reference &${clip(ref)};`);
      return null;
    }
    this.fail('not-well-formed', `malformed reference &${clip(ref)};`);
    return null;
  }
}
