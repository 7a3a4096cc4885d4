// A minimal streaming XML tokenizer for the load tool: it finds the stream
// header, the top-level elements (stanzas, features, SASL and TLS
// elements) and the stream's end, and hands each top-level element over as
// its raw text. It builds no tree and decodes no entity: the client looks
// into the few elements it needs with indexOf and small regular expressions.
// It trusts its peer's XML to be well-formed (it is a load generator, not a
// validator), and keeps only the unfinished element in its buffer.

export interface TokenSink {
  /** A stream header (`<stream:stream ...>`), as its start tag. */
  header(tag: string): void;
  /** One complete top-level element, as raw text; `name` is its qualified name. */
  element(name: string, raw: string): void;
  /** The stream's closing tag. */
  end(): void;
}

const GT = 62; // >
const SLASH = 47; // /
const QUOT = 34; // "
const APOS = 39; // '

/** Index of the '>' that ends the tag starting at `i` (quotes respected), or -1. */
function tagEnd(s: string, i: number): number {
  const gt = s.indexOf('>', i);
  if (gt === -1) return -1;
  // Fast path: no quote before the first '>' means no '>' can be quoted.
  const q1 = s.indexOf('"', i);
  const q2 = s.indexOf("'", i);
  if ((q1 === -1 || q1 > gt) && (q2 === -1 || q2 > gt)) return gt;
  let quote = 0;
  for (let k = i + 1; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (quote !== 0) {
      if (c === quote) quote = 0;
    } else if (c === QUOT || c === APOS) quote = c;
    else if (c === GT) return k;
  }
  return -1;
}

function tagName(s: string, start: number, end: number): string {
  let k = start;
  while (k < end) {
    const c = s.charCodeAt(k);
    if (c === 32 || c === 9 || c === 10 || c === 13 || c === SLASH || c === GT) break;
    k++;
  }
  return s.slice(start, k);
}

function isStreamName(name: string): boolean {
  return name === 'stream' || name.endsWith(':stream');
}

export class Tokenizer {
  private buf = '';
  /** Where scanning resumes in `buf`. */
  private pos = 0;
  /** 0: before the header; 1: inside the stream; >1: inside a top-level element. */
  private depth = 0;
  /** Start of the current top-level element in `buf`, or -1. */
  private elStart = -1;
  private elName = '';
  /** Bumped by reset(), so that a write() whose callback reset the tokenizer stops. */
  private generation = 0;
  private readonly sink: TokenSink;

  constructor(sink: TokenSink) {
    this.sink = sink;
  }

  /**
   * Forgets everything (a stream restart after TLS or SASL). `inStream`:
   * what follows are top-level elements with no header before them (the
   * framed transports, WebSocket and BOSH, whose stream header is not XML
   * text around the elements).
   */
  reset(inStream = false): void {
    this.generation++;
    this.buf = '';
    this.pos = 0;
    this.depth = inStream ? 1 : 0;
    this.elStart = -1;
  }

  write(chunk: string): void {
    const s = this.buf.length === 0 ? chunk : this.buf + chunk;
    this.buf = s;
    const gen = this.generation;
    let i = this.pos;
    for (;;) {
      const lt = s.indexOf('<', i);
      if (lt === -1) {
        i = s.length;
        break;
      }
      const next = s.charCodeAt(lt + 1);
      if (Number.isNaN(next)) {
        i = lt;
        break;
      }
      let end: number;
      if (next === 63 /* ? */) {
        end = s.indexOf('?>', lt + 2);
        if (end === -1) {
          i = lt;
          break;
        }
        i = end + 2;
        continue;
      }
      if (next === 33 /* ! */) {
        // (XMPP forbids comments; CDATA may appear inside stanzas.)
        if (s.length - lt < 9) {
          i = lt; // too short yet to tell a comment from CDATA
          break;
        }
        const close = s.startsWith('<!--', lt) ? '-->' : s.startsWith('<![CDATA[', lt) ? ']]>' : '>';
        end = s.indexOf(close, lt + 2);
        if (end === -1) {
          i = lt;
          break;
        }
        i = end + close.length;
        continue;
      }
      end = tagEnd(s, lt);
      if (end === -1) {
        i = lt;
        break;
      }
      i = end + 1;
      if (next === SLASH) {
        this.depth--;
        if (this.depth <= 0) {
          this.depth = 0;
          this.sink.end();
        } else if (this.depth === 1) {
          const raw = s.slice(this.elStart, i);
          this.elStart = -1;
          this.sink.element(this.elName, raw);
        }
        if (gen !== this.generation) return;
        continue;
      }
      const empty = s.charCodeAt(end - 1) === SLASH;
      if (this.depth <= 1) {
        const name = tagName(s, lt + 1, end);
        if (isStreamName(name) && !empty) {
          // A header: the first one, or a restarted stream's.
          this.depth = 1;
          this.sink.header(s.slice(lt, i));
          if (gen !== this.generation) return;
          continue;
        }
        if (this.depth === 0) continue; // nothing but a header is expected here
        if (empty) {
          this.sink.element(name, s.slice(lt, i));
          if (gen !== this.generation) return;
          continue;
        }
        this.elStart = lt;
        this.elName = name;
        this.depth = 2;
        continue;
      }
      if (!empty) this.depth++;
    }
    // Keep only what is still needed: the unfinished element, or the unfinished tag.
    const keep = this.elStart !== -1 ? this.elStart : i;
    if (keep >= s.length) {
      this.buf = '';
      this.pos = 0;
    } else {
      this.buf = keep === 0 ? s : s.slice(keep);
      this.pos = i - keep;
    }
    if (this.elStart !== -1) this.elStart = 0;
  }
}

/** The value of attribute `name` in a start tag (raw, entities undecoded), or undefined. */
export function attr(tag: string, name: string): string | undefined {
  const i = tag.indexOf(` ${name}=`);
  if (i === -1) return undefined;
  const q = tag.charCodeAt(i + name.length + 2);
  if (q !== QUOT && q !== APOS) return undefined;
  const start = i + name.length + 3;
  const end = tag.indexOf(q === QUOT ? '"' : "'", start);
  return end === -1 ? undefined : tag.slice(start, end);
}

/** The start tag of an element's raw text. */
export function startTag(raw: string): string {
  const end = tagEnd(raw, 0);
  return end === -1 ? raw : raw.slice(0, end + 1);
}

/** The text content of the first `<name>`...`</name>` child (raw), or undefined. */
export function childText(raw: string, name: string): string | undefined {
  let i = raw.indexOf(`<${name}`, 1);
  while (i !== -1) {
    const c = raw.charCodeAt(i + name.length + 1);
    if (c === GT || c === 32 || c === SLASH || c === 9 || c === 10 || c === 13) break;
    i = raw.indexOf(`<${name}`, i + 1);
  }
  if (i === -1) return undefined;
  const gt = tagEnd(raw, i);
  if (gt === -1) return undefined;
  if (raw.charCodeAt(gt - 1) === SLASH) return '';
  const end = raw.indexOf(`</${name}>`, gt + 1);
  return end === -1 ? undefined : raw.slice(gt + 1, end);
}

/** The name of the first child element of the top-level element (local name), or undefined. */
export function firstChildName(raw: string, after = 0): string | undefined {
  const open = tagEnd(raw, after);
  if (open === -1) return undefined;
  let i = raw.indexOf('<', open + 1);
  while (i !== -1) {
    const c = raw.charCodeAt(i + 1);
    if (c !== SLASH && c !== 33 && c !== 63) {
      const end = tagEnd(raw, i);
      if (end === -1) return undefined;
      const name = tagName(raw, i + 1, end);
      const colon = name.indexOf(':');
      return colon === -1 ? name : name.slice(colon + 1);
    }
    if (c === SLASH) return undefined;
    i = raw.indexOf('<', i + 1);
  }
  return undefined;
}

/**
 * The defined condition of an error element: the first child of `<error>`
 * (stanza errors), of `<failure>` (SASL) or of `<stream:error>`.
 */
export function errorCondition(raw: string, container?: string): string {
  if (container === undefined) return firstChildName(raw) ?? 'undefined-condition';
  const i = raw.indexOf(`<${container}`);
  if (i === -1) return 'undefined-condition';
  return firstChildName(raw, i) ?? 'undefined-condition';
}

