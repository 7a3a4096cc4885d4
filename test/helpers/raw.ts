// A raw XMPP client for byte-level tests: it writes exactly what a test says
// and lets the test wait for what the server sends, event by event.
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';

/**
 * One unit of what the server sent, in order: its XML declaration, its
 * stream header, a top-level element, its closing tag, or stray text.
 */
export type Item =
  | { kind: 'decl'; raw: string }
  | { kind: 'open'; raw: string; attrs: Record<string, string> }
  | { kind: 'el'; raw: string; el: Element }
  | { kind: 'close'; raw: string }
  | { kind: 'text'; raw: string };

const TAG = /<(\/?)([^\s/>]+)((?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>/y;
const ATTR = /([^\s=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
const ENTITY: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

const unescape = (s: string) =>
  s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e: string) =>
    e[0] === '#' ? String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10)) : (ENTITY[e] ?? m),
  );

/** Attributes of one start tag, by name (order-insensitive). */
export function parseAttrs(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(ATTR)) out[m[1]] = unescape(m[2] ?? m[3]);
  return out;
}

/** The next complete item of `s` from offset `i` (leading whitespace skipped), or null if incomplete. */
function nextItem(s: string, i: number): { item: Item; end: number } | null {
  while (i < s.length && ' \t\r\n'.includes(s[i])) i++;
  if (i >= s.length) return null;
  if (s[i] !== '<') {
    const j = s.indexOf('<', i);
    if (j === -1) return null;
    return { item: { kind: 'text', raw: s.slice(i, j) }, end: j };
  }
  if (s.startsWith('<?', i)) {
    const j = s.indexOf('?>', i);
    return j === -1 ? null : { item: { kind: 'decl', raw: s.slice(i, j + 2) }, end: j + 2 };
  }
  let depth = 0;
  let k = i;
  for (;;) {
    TAG.lastIndex = k;
    const m = TAG.exec(s);
    if (!m) return null; // incomplete (the server's output is taken to be well-formed)
    const [raw, slash, name, attrs, empty] = m;
    const end = TAG.lastIndex;
    if (depth === 0) {
      if (name === 'stream:stream' && slash) return { item: { kind: 'close', raw }, end };
      if (name === 'stream:stream') return { item: { kind: 'open', raw, attrs: parseAttrs(attrs) }, end };
    }
    if (slash) depth--;
    else if (!empty) depth++;
    if (depth === 0) {
      const text = s.slice(i, end);
      return { item: { kind: 'el', raw: text, el: parseXml(text) }, end };
    }
    const lt = s.indexOf('<', end);
    if (lt === -1) return null;
    k = lt;
  }
}

const show = (it: Item | undefined) => (it ? `${it.kind}: ${it.raw}` : 'nothing');

export class RawClient {
  private sock: net.Socket;
  /** The TCP connection under the (plain or TLS) stream. */
  private readonly tcp: net.Socket;
  /** Everything received on the current (plain or TLS) stream, as text. */
  buffer = '';
  private waiters: (() => void)[] = [];
  closed: Promise<void>;
  private closedFlag = false;
  private parsedItems: Item[] = [];
  /** Offset of the first unparsed character of `buffer`. */
  private parsed = 0;
  /** Index into `items` of the next one next() returns. */
  cursor = 0;

  private constructor(sock: net.Socket) {
    this.sock = sock;
    this.tcp = sock;
    this.closed = this.attach(sock);
  }

  /** The accepting end of a connection (a scripted peer server's): what the other end sends, read the same way. */
  static adopt(sock: net.Socket): RawClient {
    return new RawClient(sock);
  }

  /** `prefix`: bytes sent first, before TLS too (a load balancer's PROXY protocol header). */
  static async connect(port: number, opts: { directTls?: boolean; host?: string; localAddress?: string; prefix?: Buffer } = {}): Promise<RawClient> {
    const host = opts.host ?? '127.0.0.1';
    const tcp = () => {
      const s = net.connect({ port, host, localAddress: opts.localAddress });
      if (opts.prefix) s.write(opts.prefix);
      return s;
    };
    const sock = opts.directTls
      ? tls.connect({ port, host, rejectUnauthorized: false, servername: 'localhost', ...(opts.localAddress || opts.prefix ? { socket: tcp() } : {}) })
      : tcp();
    await once(sock, opts.directTls ? 'secureConnect' : 'connect');
    return new RawClient(sock);
  }

  private attach(sock: net.Socket): Promise<void> {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buffer += d;
      this.wake();
    });
    sock.on('error', () => {});
    return new Promise((resolve) =>
      sock.on('close', () => {
        this.closedFlag = true;
        this.wake();
        resolve();
      }),
    );
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Parses what arrived since the last call. */
  private parse(): void {
    for (;;) {
      const r = nextItem(this.buffer, this.parsed);
      if (!r) return;
      this.parsedItems.push(r.item);
      this.parsed = r.end;
    }
  }

  /** What the server sent on the current stream so far, parsed, in order. */
  get items(): readonly Item[] {
    this.parse();
    return this.parsedItems;
  }

  /** Forgets everything received so far (the buffer and the parsed items). */
  resetReader(): void {
    this.buffer = '';
    this.parsedItems = [];
    this.parsed = 0;
    this.cursor = 0;
  }

  /** Skips everything received so far: next() returns only what comes later. */
  mark(): void {
    this.parse();
    this.cursor = this.parsedItems.length;
  }

  /** Resolves on the next data or on close. */
  private changed(): Promise<void> {
    return new Promise<void>((r) => this.waiters.push(r));
  }

  /** The next item, strictly in order; throws if the connection closes first. */
  async next(): Promise<Item> {
    for (;;) {
      this.parse();
      if (this.cursor < this.parsedItems.length) return this.parsedItems[this.cursor++];
      if (this.closedFlag) throw new Error(`connection closed while waiting for the next item; unparsed: ${JSON.stringify(this.buffer.slice(this.parsed))}`);
      await this.changed();
    }
  }

  /** The next item, which must be an element (named `name`, if given). */
  async nextEl(name?: string): Promise<Element> {
    const it = await this.next();
    if (it.kind !== 'el' || (name !== undefined && it.el.name !== name)) throw new Error(`expected ${name ? `<${name}/>` : 'an element'}, got ${show(it)}`);
    return it.el;
  }

  /** The first element received on this stream (after `from`, an index into items) that satisfies `pred`. */
  async find(pred: (el: Element) => boolean, from = 0): Promise<Element> {
    let i = from;
    for (;;) {
      this.parse();
      for (; i < this.parsedItems.length; i++) {
        const it = this.parsedItems[i];
        if (it.kind === 'el' && pred(it.el)) return it.el;
      }
      if (this.closedFlag) throw new Error(`connection closed before the awaited element arrived; received:\n${this.buffer}`);
      await this.changed();
    }
  }

  /** Sends an iq (or any stanza with that id) and returns the reply with the same id. */
  async request(xml: string, id: string): Promise<Element> {
    this.parse();
    const from = this.parsedItems.length;
    this.send(xml);
    return this.find((el) => el.attrs.id === id, from);
  }

  get tlsProtocol(): string | null {
    return this.sock instanceof tls.TLSSocket ? this.sock.getProtocol() : null;
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  send(s: string | Buffer): void {
    this.sock.write(s);
  }

  /**
   * Writes `s` on its own: Nagle's algorithm off, and resolves once the
   * socket has handed it to the kernel, so that successive writes leave as
   * separate TCP segments (and, over TLS, separate records).
   */
  write(s: string | Buffer): Promise<void> {
    this.tcp.setNoDelay(true);
    return new Promise((resolve, reject) => this.sock.write(s, (err) => (err ? reject(err) : resolve())));
  }

  /** Stops reading: what the server sends piles up in the kernel's buffers, then in the server's. */
  pause(): void {
    this.sock.pause();
  }

  /** Resolves with the first match of `re` in what arrived after `from` (default: anywhere). */
  async waitFor(re: RegExp, from = 0): Promise<RegExpMatchArray> {
    for (;;) {
      const m = this.buffer.slice(from).match(re);
      if (m) return m;
      if (this.closedFlag) throw new Error(`connection closed before ${re}; received:\n${this.buffer}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** Sends, then waits for a match in what arrives after the send. */
  async exchange(s: string, re: RegExp): Promise<RegExpMatchArray> {
    const from = this.buffer.length;
    this.send(s);
    return this.waitFor(re, from);
  }

  /** `identity`: a client certificate and key (PEM) to present. */
  /** The certificate the server presented on this connection's TLS (STARTTLS or direct), if any. */
  get peerCertificate(): tls.PeerCertificate | undefined {
    return this.sock instanceof tls.TLSSocket ? this.sock.getPeerCertificate() : undefined;
  }

  async starttls(identity?: { cert: string; key: string }): Promise<void> {
    const plain = this.sock;
    plain.removeAllListeners('data');
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, servername: 'localhost', ...identity });
    await once(secure, 'secureConnect');
    this.sock = secure;
    this.resetReader();
    this.attach(secure);
  }

  /** STARTTLS as the accepting end, presenting `identity`; resolves once the handshake is done. */
  async starttlsServer(identity: { cert: string; key: string }): Promise<void> {
    const plain = this.sock;
    plain.removeAllListeners('data');
    const secure = new tls.TLSSocket(plain, { isServer: true, ...identity });
    this.sock = secure;
    this.resetReader();
    this.attach(secure);
    await once(secure, 'secure');
  }

  end(): void {
    this.sock.end();
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/** Resolves once a socket that refused a write has drained, or has closed (whichever comes first; both listeners go). */
export function drainedOrClosed(sock: net.Socket): Promise<void> {
  return new Promise<void>((r) => {
    const done = () => {
      sock.off('drain', done);
      sock.off('close', done);
      r();
    };
    sock.once('drain', done);
    sock.once('close', done);
  });
}

export const header = (to = 'localhost') =>
  `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='${to}' version='1.0'>`;

export const plainAuth = (user: string, password: string) =>
  `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString('base64')}</auth>`;

/** STARTTLS, SASL PLAIN and bind, raw; returns the client and its full JID. */
export async function login(port: number, user: string, password: string, resource = 'raw'): Promise<{ c: RawClient; jid: string }> {
  const c = await RawClient.connect(port);
  await c.exchange(header(), /<\/stream:features>/);
  await c.exchange(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`, /<proceed[^>]*\/>/);
  await c.starttls();
  await c.exchange(header(), /<\/stream:features>/);
  await c.exchange(plainAuth(user, password), /<success[^>]*(\/>|<\/success>)/);
  c.resetReader();
  await c.exchange(header(), /<\/stream:features>/);
  // The bound JID, or the bind's error (which leaves the stream open: waiting on for a <jid/> would never end).
  const m = await c.exchange(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind></iq>`, /<jid>([^<]+)<\/jid>|<iq[^>]*type=["']error["'][\s\S]*?<\/iq>/);
  if (m[1] === undefined) {
    c.destroy();
    throw new Error(`bind failed: ${m[0]}`);
  }
  c.mark();
  return { c, jid: m[1] };
}
