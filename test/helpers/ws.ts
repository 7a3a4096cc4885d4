// A raw XMPP-over-WebSocket client (RFC 7395) on the `ws` library: it
// sends exactly the messages a test says and lets the test wait for each
// message the server sends, parsed on its own (each must be a document).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import WebSocket from 'ws';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import type { TestServer } from './server.ts';
import { NS_BIND, NS_SASL, b64, scramClient, within } from './protocol.ts';

export const NS_FRAMING = 'urn:ietf:params:xml:ns:xmpp-framing';
export const OPEN = (to = 'localhost') => `<open xmlns='${NS_FRAMING}' to='${to}' version='1.0'/>`;
export const CLOSE = `<close xmlns='${NS_FRAMING}'/>`;

/** The certificate a test server generated, for wss:// clients to trust. */
export function serverCa(server: TestServer): Buffer {
  return readFileSync(join(server.config.dataDir, 'tls', `${server.config.domain}.crt`));
}

export class WsClient {
  readonly ws: WebSocket;
  /** Every message received, in order, as text. */
  readonly raw: string[] = [];
  private read = 0;
  private waiters: (() => void)[] = [];
  closeCode: number | undefined;
  readonly closed: Promise<number>;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data) => {
      this.raw.push(data.toString());
      this.wake();
    });
    this.closed = new Promise((resolve) =>
      ws.once('close', (code) => {
        this.closeCode = code;
        this.wake();
        resolve(code);
      }),
    );
    ws.on('error', () => {});
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Opens a WebSocket to `url` with the xmpp subprotocol (or `protocols`), trusting `ca`. */
  static async connect(url: string, opts: { ca?: Buffer; protocols?: string[]; headers?: Record<string, string>; localAddress?: string } = {}): Promise<WsClient> {
    const ws = new WebSocket(url, opts.protocols ?? ['xmpp'], { ca: opts.ca, headers: opts.headers, localAddress: opts.localAddress });
    const c = new WsClient(ws);
    await within(
      new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      }),
      10_000,
      `opening ${url}`,
    );
    return c;
  }

  send(xml: string): void {
    this.ws.send(xml);
  }

  /** The next message, as text; rejects if the connection closes first. */
  async nextRaw(ms = 10_000): Promise<string> {
    const deadline = Date.now() + ms;
    while (this.read >= this.raw.length) {
      if (this.closeCode !== undefined) throw new Error(`the WebSocket closed (${this.closeCode}) while a message was awaited`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no message in time');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.raw[this.read++];
  }

  /** The next message parsed (each message is a document of its own, RFC 7395 §3.3.3); skips up to one named otherwise if `name` is given. */
  async next(name?: string, ms = 10_000): Promise<Element> {
    for (;;) {
      const el = parseXml(await this.nextRaw(ms)) as Element;
      if (name === undefined || el.name === name) return el;
    }
  }

  /** The next message that `pred` accepts, those before it skipped (ack requests...). */
  async find(pred: (el: Element) => boolean, ms = 10_000): Promise<Element> {
    const deadline = Date.now() + ms;
    for (;;) {
      const el = parseXml(await this.nextRaw(Math.max(1, deadline - Date.now()))) as Element;
      if (pred(el)) return el;
    }
  }

  /** Messages not yet read. */
  get pending(): number {
    return this.raw.length - this.read;
  }

  /** Ends the connection at once: no <close/>, no WebSocket closing handshake. */
  kill(): void {
    this.ws.terminate();
  }

  async close(): Promise<void> {
    if (this.closeCode !== undefined) return;
    this.ws.terminate();
    await once(this.ws, 'close');
  }
}

/** Opens the stream and reads the server's <open/> and features. */
export async function openStream(c: WsClient): Promise<{ open: Element; features: Element }> {
  c.send(OPEN());
  const open = await c.next();
  const features = await c.next();
  return { open, features };
}

/** SCRAM-SHA-256 over an open stream (RFC 5802, RFC 7677), then the restart: the features after it. */
export async function scramLogin(c: WsClient, user: string, password: string): Promise<Element> {
  const clientFirstBare = `n=${user},r=${randomBytes(12).toString('base64')}`;
  c.send(`<auth xmlns='${NS_SASL}' mechanism='SCRAM-SHA-256'>${b64('n,,' + clientFirstBare)}</auth>`);
  const challenge = await c.next();
  if (challenge.name !== 'challenge') throw new Error(`expected a challenge, got ${challenge.toString()}`);
  const serverFirst = Buffer.from(challenge.getText(), 'base64').toString();
  const { clientFinal, serverSignature } = scramClient('sha256', password, clientFirstBare, serverFirst, 'n,,');
  c.send(`<response xmlns='${NS_SASL}'>${b64(clientFinal)}</response>`);
  const success = await c.next();
  if (success.name !== 'success' || Buffer.from(success.getText(), 'base64').toString() !== `v=${serverSignature.toString('base64')}`) throw new Error(`SCRAM failed: ${success.toString()}`);
  // RFC 7395 §3.7: a new <open/> after SASL success, no <close/>.
  const { features } = await openStream(c);
  return features;
}

/** Binds `resource` (RFC 6120 §7): the full JID. */
export async function wsBind(c: WsClient, resource: string): Promise<string> {
  c.send(`<iq xmlns='jabber:client' type='set' id='bind-${resource}'><bind xmlns='${NS_BIND}'><resource>${resource}</resource></bind></iq>`);
  const r = await c.next('iq');
  const jid = r.getChild('bind', NS_BIND)?.getChildText('jid');
  if (!jid) throw new Error(`bind failed: ${r.toString()}`);
  return jid;
}

/** A wss:// client logged in with SCRAM and bound. */
export async function wsOnline(server: TestServer, user: string, password: string, resource: string): Promise<{ c: WsClient; jid: string }> {
  const c = await WsClient.connect(`wss://localhost:${server.httpsPort}/xmpp-websocket`, { ca: serverCa(server) });
  await openStream(c);
  await scramLogin(c, user, password);
  return { c, jid: await wsBind(c, resource) };
}
