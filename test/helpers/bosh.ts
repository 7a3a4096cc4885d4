// A raw BOSH client (XEP-0124, XEP-0206) over node's https: it sends
// exactly the <body/> wrappers a test says, with the rids it says, and
// hands back each answer's <body/> parsed. Its requests go over the
// connections of its agents, in turn: several agents put one session's
// requests on connections the acceptor hands to different workers.
import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import type { TestServer } from './server.ts';
import { serverCa } from './ws.ts';
import { NS_BIND, NS_SASL, b64, scramClient } from './protocol.ts';
import { reply } from './http.ts';

export const NS_HTTPBIND = 'http://jabber.org/protocol/httpbind';
export const NS_XBOSH = 'urn:xmpp:xbosh';

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The <body/>, when the answer is one. */
  body: Element | undefined;
}

/** One POST of `text` to `url`; rejects if no answer comes within `ms`. */
export async function post(url: string, text: string, opts: { ca?: Buffer; agent?: http.Agent | false; headers?: Record<string, string>; ms?: number } = {}): Promise<Answer> {
  const lib = url.startsWith('https:') ? https : http;
  const req = lib.request(url, { method: 'POST', ca: opts.ca, agent: opts.agent ?? false, headers: { 'Content-Type': 'text/xml; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...opts.headers } });
  const r = await reply(req, `POST ${url}`, { body: text, ms: opts.ms ?? 30_000 });
  let body: Element | undefined;
  try {
    const el = parseXml(r.body) as Element;
    if (el.name === 'body') body = el;
  } catch {
    // not XML: left undefined
  }
  return { status: r.status, headers: r.headers, text: r.body, body };
}

/** The payload elements of an answer. */
export const payloads = (body: Element | undefined): Element[] => (body ? body.children.filter((c): c is Element => typeof c !== 'string') : []);

export class BoshClient {
  /** Where the next request goes (a test may point it at another node). */
  url: string;
  readonly ca: Buffer | undefined;
  /** The next rid. */
  rid: number;
  sid = '';
  /** The domain the session was created for ('to'). */
  domain = 'localhost';
  /** Payloads received and not yet taken by find(). */
  readonly inbox: Element[] = [];
  readonly agents: http.Agent[];
  private turn = 0;

  constructor(url: string, opts: { ca?: Buffer; agents?: number } = {}) {
    this.url = url;
    this.ca = opts.ca;
    // A large random initial rid (§14.1), well below 2^53.
    this.rid = 1_000_000 + (randomBytes(4).readUInt32BE() % 1_000_000_000);
    // Two by default, as a browser keeps: one request held while the other sends.
    this.agents = Array.from({ length: opts.agents ?? 2 }, () => (url.startsWith('https:') ? new https.Agent({ keepAlive: true, maxSockets: 1, ca: opts.ca }) : new http.Agent({ keepAlive: true, maxSockets: 1 })));
  }

  /** A <body/> with these attributes (rid and sid added unless given) around `content`. */
  wrap(attrs: Record<string, string | number>, content = ''): string {
    const all: Record<string, string | number> = { ...(this.sid ? { sid: this.sid } : {}), ...attrs };
    const a = Object.entries(all).map(([k, v]) => ` ${k}='${v}'`).join('');
    return content ? `<body xmlns='${NS_HTTPBIND}'${a}>${content}</body>` : `<body xmlns='${NS_HTTPBIND}'${a}/>`;
  }

  /** POSTs a raw text over the next agent in turn. */
  raw(text: string, ms?: number): Promise<Answer> {
    const agent = this.agents[this.turn++ % this.agents.length];
    return post(this.url, text, { ca: this.ca, agent, ms });
  }

  /** Sends the next request (the next rid) with `content` and `attrs`; its answer's <body/>, its payloads kept in the inbox. */
  async send(content = '', attrs: Record<string, string | number> = {}): Promise<Element> {
    const a = await this.raw(this.wrap({ rid: this.rid++, ...attrs }, content));
    if (!a.body) throw new Error(`not a <body/>: HTTP ${a.status} ${a.text}`);
    this.inbox.push(...payloads(a.body));
    return a.body;
  }

  /** §7.1: creates a session; the creation answer. */
  async create(attrs: Record<string, string | number> = {}): Promise<Element> {
    const body = await this.send('', { to: this.domain, wait: 10, hold: 1, ver: '1.11', 'xml:lang': 'en', 'xmlns:xmpp': NS_XBOSH, 'xmpp:version': '1.0', ...attrs });
    if (body.attrs.type === 'terminate') throw new Error(`session refused: ${body.toString()}`);
    this.sid = body.attrs.sid;
    if (attrs.to !== undefined) this.domain = String(attrs.to);
    return body;
  }

  /** The first payload `pred` takes, from the inbox or from empty requests sent until it comes. */
  async find(pred: (el: Element) => boolean, tries = 10): Promise<Element> {
    for (let i = 0; ; i++) {
      const at = this.inbox.findIndex(pred);
      if (at >= 0) return this.inbox.splice(at, 1)[0];
      if (i >= tries) throw new Error(`not received: inbox ${this.inbox.map((e) => e.toString()).join(' ')}`);
      const body = await this.send();
      if (body.attrs.type === 'terminate') throw new Error(`the session ended: ${body.toString()}`);
    }
  }

  close(): void {
    for (const a of this.agents) a.destroy();
  }
}

/** SCRAM-SHA-256 (RFC 5802, RFC 7677), then the restart (XEP-0206 §5): the features after it. */
export async function boshScram(c: BoshClient, user: string, password: string): Promise<Element> {
  await c.find((el) => el.name === 'stream:features');
  const clientFirstBare = `n=${user},r=${randomBytes(12).toString('base64')}`;
  await c.send(`<auth xmlns='${NS_SASL}' mechanism='SCRAM-SHA-256'>${b64('n,,' + clientFirstBare)}</auth>`);
  const challenge = await c.find((el) => el.attrs.xmlns === NS_SASL);
  if (challenge.name !== 'challenge') throw new Error(`expected a challenge, got ${challenge.toString()}`);
  const serverFirst = Buffer.from(challenge.getText(), 'base64').toString();
  const { clientFinal, serverSignature } = scramClient('sha256', password, clientFirstBare, serverFirst, 'n,,');
  await c.send(`<response xmlns='${NS_SASL}'>${b64(clientFinal)}</response>`);
  const success = await c.find((el) => el.attrs.xmlns === NS_SASL);
  if (success.name !== 'success' || Buffer.from(success.getText(), 'base64').toString() !== `v=${serverSignature.toString('base64')}`) throw new Error(`SCRAM failed: ${success.toString()}`);
  await c.send('', { to: c.domain, 'xml:lang': 'en', 'xmlns:xmpp': NS_XBOSH, 'xmpp:restart': 'true' });
  return c.find((el) => el.name === 'stream:features');
}

/** Binds `resource` (RFC 6120 §7): the full JID. */
export async function boshBind(c: BoshClient, resource: string): Promise<string> {
  await c.send(`<iq xmlns='jabber:client' type='set' id='bind-${resource}'><bind xmlns='${NS_BIND}'><resource>${resource}</resource></bind></iq>`);
  const r = await c.find((el) => el.name === 'iq' && el.attrs.id === `bind-${resource}`);
  const jid = r.getChild('bind', NS_BIND)?.getChildText('jid');
  if (!jid) throw new Error(`bind failed: ${r.toString()}`);
  return jid;
}

/** An https:// BOSH client of `server`, its session created, logged in with SCRAM and bound. */
export async function boshOnline(server: TestServer, user: string, password: string, resource: string, opts: { agents?: number; attrs?: Record<string, string | number> } = {}): Promise<{ c: BoshClient; jid: string }> {
  const c = new BoshClient(`https://localhost:${server.httpsPort}/http-bind`, { ca: serverCa(server), agents: opts.agents });
  await c.create(opts.attrs);
  await boshScram(c, user, password);
  return { c, jid: await boshBind(c, resource) };
}
