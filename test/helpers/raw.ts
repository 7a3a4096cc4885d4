// A raw XMPP client for byte-level tests: it writes exactly what a test says
// and lets the test wait for what the server sends, event by event.
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';

export class RawClient {
  private sock: net.Socket;
  /** Everything received on the current (plain or TLS) stream, as text. */
  buffer = '';
  private waiters: (() => void)[] = [];
  closed: Promise<void>;
  private closedFlag = false;

  private constructor(sock: net.Socket) {
    this.sock = sock;
    this.closed = this.attach(sock);
  }

  static async connect(port: number, opts: { directTls?: boolean } = {}): Promise<RawClient> {
    const sock = opts.directTls
      ? tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, servername: 'localhost' })
      : net.connect({ port, host: '127.0.0.1' });
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

  get isClosed(): boolean {
    return this.closedFlag;
  }

  send(s: string | Buffer): void {
    this.sock.write(s);
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

  async starttls(): Promise<void> {
    const plain = this.sock;
    plain.removeAllListeners('data');
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, servername: 'localhost' });
    await once(secure, 'secureConnect');
    this.sock = secure;
    this.buffer = '';
    this.attach(secure);
  }

  end(): void {
    this.sock.end();
  }

  destroy(): void {
    this.sock.destroy();
  }
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
  c.buffer = '';
  await c.exchange(header(), /<\/stream:features>/);
  const m = await c.exchange(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind></iq>`, /<jid>([^<]+)<\/jid>/);
  return { c, jid: m[1] };
}
