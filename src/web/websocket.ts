// XMPP over WebSocket (RFC 7395) as a framed transport under the stream
// engine (stream/transport.ts): each WebSocket message is one element,
// the stream's header and end are <open/> and <close/> in the framing
// namespace (§3.3.2), and what the engine writes is cut into one message
// per element, each carrying the namespace declarations it relies on
// (§3.3.3). Negotiation, limits, pacing and sessions are the engine's, as
// on TCP.
import type net from 'node:net';
import { type Element, escapeXML } from 'ltx';
import type { WebSocket, RawData } from 'ws';
import { StreamParser } from '../xml/parser.ts';
import type { FramedTransport, FrameSink } from '../stream/transport.ts';
import { NS_CLIENT, NS_STREAM } from '../xmpp/ns.ts';
import { log } from '../log.ts';

export const NS_FRAMING = 'urn:ietf:params:xml:ns:xmpp-framing';

/**
 * What each message is parsed inside of: a root of no namespace, so that a
 * prefix a message uses must be declared in it (§3.3.3: each message is a
 * document of its own). An element with no namespace of its own is taken
 * to be in the content namespace, as on a TCP stream.
 */
const ROOT = Buffer.from('<frames>');

export interface WebSocketOptions {
  /** RFC 7395 §3.9, §6: TLS (wss), or a plain connection that counts as secure (see web/http.ts). */
  secure: boolean;
  /** The client's address: the connection's, or the one a trusted proxy gave. */
  remoteAddress: string | undefined;
  remotePort: number | undefined;
  maxStanzaBytes: number;
  maxStanzaElements: number;
}

export class WebSocketTransport implements FramedTransport {
  readonly kind = 'websocket';
  readonly secure: boolean;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly footer = `<close xmlns='${NS_FRAMING}'/>`;

  /** §3.6.1: the client is to open a new WebSocket at `uri`; no stream error goes with it. */
  redirect(uri: string): string {
    return `<close xmlns='${NS_FRAMING}' see-other-uri='${escapeXML(uri)}'/>`;
  }
  private readonly ws: WebSocket;
  /** The connection the WebSocket runs on (TCP, or TLS over it): what output waits in. */
  private readonly socket: net.Socket;
  private readonly parser: StreamParser;
  private readonly opts: WebSocketOptions;
  private sink: FrameSink | undefined;
  /** The element of the message being parsed, and how many it held. */
  private found: { el: Element; cost: number } | undefined;
  private count = 0;
  /** A message was refused: the stream is ending, the rest is not read. */
  private failed = false;

  constructor(ws: WebSocket, socket: net.Socket, opts: WebSocketOptions) {
    this.ws = ws;
    this.socket = socket;
    this.opts = opts;
    this.secure = opts.secure;
    this.remoteAddress = opts.remoteAddress;
    this.remotePort = opts.remotePort;
    this.parser = new StreamParser(
      {
        streamStart: () => {},
        element: (el, cost) => {
          this.count++;
          this.found = { el, cost };
        },
        streamEnd: () => this.fail('not-well-formed', 'an end tag with no start in the message'),
        error: (condition, text) => this.fail(condition, text),
      },
      { maxStanzaBytes: opts.maxStanzaBytes, maxStanzaElements: opts.maxStanzaElements },
    );
    this.parser.write(ROOT);
    ws.on('error', (err) => log.debug('websocket error', { ip: this.remoteAddress, err: err.message }));
  }

  attach(sink: FrameSink): void {
    this.sink = sink;
    this.ws.on('message', (data, isBinary) => this.message(data, isBinary));
    // §3.8: a WebSocket ping is a keepalive (ws answers it): activity, as a whitespace keepalive is on TCP.
    this.ws.on('ping', () => sink.read(0));
  }

  onClose(fn: () => void): void {
    this.ws.once('close', fn);
  }

  header(attrs: string): string {
    return `<open xmlns='${NS_FRAMING}'${attrs}/>`;
  }

  private fail(condition: Parameters<FrameSink['error']>[0], text: string): void {
    if (this.failed) return;
    this.failed = true;
    this.sink?.error(condition, text);
  }

  private message(data: RawData, isBinary: boolean): void {
    if (this.failed) return;
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    this.sink!.read(buf.length);
    // §3.2: the XMPP subprotocol's messages are text.
    if (isBinary) return this.fail('unsupported-encoding', 'WebSocket messages must be text (RFC 7395 §3.2)');
    let start = 0;
    while (start < buf.length && (buf[start] === 0x20 || buf[start] === 0x0a || buf[start] === 0x0d || buf[start] === 0x09)) start++;
    // Whitespace alone: a keepalive of the TCP kind, harmless (a message, so activity).
    if (start === buf.length) return;
    // §3.3.3 does not recommend an XML declaration, but a document may have one.
    if (buf.toString('latin1', start, start + 5) === '<?xml') {
      const end = buf.indexOf('?>', start);
      if (end < 0 || end - start > 128) return this.fail('not-well-formed', 'an XML declaration that does not end');
      start = end + 2;
    }
    this.found = undefined;
    this.count = 0;
    this.parser.write(start === 0 ? buf : buf.subarray(start));
    if (this.failed) return;
    // §3.3.3: every message is one complete element.
    if (this.count !== 1 || !this.parser.atStreamLevel) {
      return this.fail('not-well-formed', this.count > 1 ? 'a WebSocket message holds more than one element (RFC 7395 §3.3.3)' : 'a WebSocket message must hold one complete element (RFC 7395 §3.3.3)');
    }
    const { el, cost } = this.found!;
    this.found = undefined;
    if (el.attrs.xmlns === NS_FRAMING && (el.name === 'open' || el.name === 'close')) {
      if (el.name === 'close') return this.sink!.close();
      const attrs = { ...el.attrs };
      delete attrs.xmlns;
      return this.sink!.open(attrs);
    }
    this.sink!.element(el, cost);
  }

  // ---- output (stream/transport.ts Wire) ----

  get destroyed(): boolean {
    return this.socket.destroyed || this.ws.readyState === this.ws.CLOSED;
  }

  get writableLength(): number {
    return this.ws.bufferedAmount;
  }

  write(data: string, cb: (err?: Error | null) => void): void {
    const list = frames(data, NS_CLIENT);
    if (list.length === 0) return void queueMicrotask(() => cb());
    for (let i = 0; i < list.length - 1; i++) this.ws.send(list[i]);
    this.ws.send(list[list.length - 1], cb);
  }

  once(_event: 'drain', listener: () => void): void {
    this.socket.once('drain', listener);
  }

  end(data?: string): void {
    if (data) this.write(data, () => {});
    // §3.6: our <close/> is followed by the WebSocket's closing handshake.
    this.ws.close(1000);
  }

  destroy(): void {
    this.ws.terminate();
  }

  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }
}

/**
 * The top-level elements of `xml` (the engine's own output, serialised by
 * ltx or its templates: markup '<' and '>' only, values quoted and
 * escaped), each as one message: an element of no prefix and no xmlns of
 * its own gets the content namespace, a stream-level one (stream:features,
 * stream:error) the declaration of its prefix (RFC 7395 §3.3.3).
 */
export function frames(xml: string, content: string): string[] {
  const out: string[] = [];
  const n = xml.length;
  let i = 0;
  while (i < n) {
    const lt = xml.indexOf('<', i);
    if (lt < 0) break;
    if (xml.charCodeAt(lt + 1) === 63 /* '?' */) {
      // An XML declaration: not part of a framed stream.
      const e = xml.indexOf('?>', lt);
      i = e < 0 ? n : e + 2;
      continue;
    }
    const firstEnd = tagEnd(xml, lt);
    if (firstEnd < 0 || xml.charCodeAt(lt + 1) === 47 /* '/' */) {
      // Not an element's start: sent as it is (nothing the engine writes).
      out.push(xml.slice(lt));
      break;
    }
    let depth = 0;
    let j = lt;
    let end = -1;
    while (j < n) {
      const k = xml.indexOf('<', j);
      if (k < 0) break;
      const gt = tagEnd(xml, k);
      if (gt < 0) break;
      if (xml.charCodeAt(k + 1) === 47) depth--;
      else if (xml.charCodeAt(gt - 1) !== 47) depth++;
      j = gt + 1;
      if (depth === 0) {
        end = j;
        break;
      }
    }
    if (end < 0) {
      out.push(xml.slice(lt));
      break;
    }
    out.push(qualify(xml, lt, firstEnd, end, content));
    i = end;
  }
  return out;
}

/** The offset of the '>' that ends the tag opening at `lt`, quoted values skipped; -1 if none. */
function tagEnd(xml: string, lt: number): number {
  for (let i = lt + 1; i < xml.length; i++) {
    const c = xml.charCodeAt(i);
    if (c === 62) return i;
    if (c === 39 || c === 34) {
      const q = xml.indexOf(c === 39 ? "'" : '"', i + 1);
      if (q < 0) return -1;
      i = q;
    }
  }
  return -1;
}

/** The element from `lt` to `end`, whose start tag ends at `gt`, with the declarations it needs standing alone. */
function qualify(xml: string, lt: number, gt: number, end: number, content: string): string {
  let nameEnd = lt + 1;
  while (nameEnd < gt) {
    const c = xml.charCodeAt(nameEnd);
    if (c === 32 || c === 9 || c === 10 || c === 13 || c === 47) break;
    nameEnd++;
  }
  const name = xml.slice(lt + 1, nameEnd);
  const names = attributeNames(xml, nameEnd, gt);
  const colon = name.indexOf(':');
  let add = '';
  if (colon >= 0) {
    const prefix = name.slice(0, colon);
    if (prefix === 'stream' && !names.has('xmlns:stream')) add = ` xmlns:stream='${NS_STREAM}'`;
  } else if (!names.has('xmlns')) add = ` xmlns='${content}'`;
  if (add === '' && lt === 0 && end === xml.length) return xml;
  return xml.slice(lt, nameEnd) + add + xml.slice(nameEnd, end);
}

/** The names of the attributes between `from` and `gt` (the rest of a start tag), quoted values skipped. */
function attributeNames(xml: string, from: number, gt: number): Set<string> {
  const names = new Set<string>();
  let i = from;
  while (i < gt) {
    const eq = xml.indexOf('=', i);
    if (eq < 0 || eq > gt) break;
    names.add(xml.slice(i, eq).trim());
    let q = eq + 1;
    while (q < gt && xml.charCodeAt(q) !== 39 && xml.charCodeAt(q) !== 34) q++;
    const close = xml.indexOf(xml[q], q + 1);
    if (q >= gt || close < 0) break;
    i = close + 1;
  }
  return names;
}
