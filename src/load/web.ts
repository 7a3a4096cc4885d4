// The load tool's web transports under its client connection (client.ts):
// XMPP over WebSocket (RFC 7395) on the `ws` library, and BOSH (XEP-0124,
// XEP-0206) over node's http/https with a keep-alive agent per session, as
// a browser has. Both carry whole elements only: the connection's state
// machine is the same as on TCP, only its stream header, end and restart
// differ. Kept minimal: a load run holds thousands of these.
import http from 'node:http';
import https from 'node:https';
import type tls from 'node:tls';
import WebSocket from 'ws';
import { attr, startTag } from './tokenizer.ts';

export type Transport = 'tcp' | 'websocket' | 'bosh';
export const TRANSPORTS: readonly Transport[] = ['tcp', 'websocket', 'bosh'];

export const NS_FRAMING = 'urn:ietf:params:xml:ns:xmpp-framing';
const NS_HTTPBIND = 'http://jabber.org/protocol/httpbind';
const NS_XBOSH = 'urn:xmpp:xbosh';
/** XEP-0124 §7.1: how long the server may hold a request; our server's default upper bound. */
const BOSH_WAIT_S = 60;

/** What a link tells its connection. */
export interface LinkOwner {
  /** The transport is up; `header`: the stream header is still to be sent (WebSocket), not already sent (BOSH's creation). */
  linkOpened(header: boolean): void;
  /** WebSocket: one message (one element, or the framing's <open/> or <close/>). */
  linkFrame(text: string): void;
  /** BOSH: the payloads of an answer, whole elements. */
  linkData(text: string): void;
  /** The transport failed: a socket error's code, or a kind of our own. */
  linkError(code: string | undefined): void;
  /** The transport ended: `error` when the server ended it with a condition. */
  linkClosed(error?: string): void;
}

export interface Link {
  /** The stream header: WebSocket's <open/>; BOSH's session creation, then its restarts (XEP-0206 §5). */
  open(): void;
  /** Whole elements, in order. */
  send(list: string[]): void;
  /** Ends the stream politely after `last`: WebSocket's <close/>; BOSH's terminate (XEP-0124 §13). */
  close(last: string[]): void;
  /** The server ended the stream (WebSocket's <close/> answering ours): the transport goes. */
  end(): void;
  /** Keeps an idle transport alive (WebSocket: a ping; BOSH's held request renews itself). */
  keepalive(): void;
  /** Gone at once, nothing sent. */
  destroy(): void;
}

export interface WebTarget {
  /** ws://, wss://, http:// or https:// */
  url: string;
  domain: string;
  secureContext: tls.SecureContext;
}

export class WsLink implements Link {
  private readonly ws: WebSocket;
  private readonly domain: string;

  constructor(t: WebTarget, owner: LinkOwner) {
    this.domain = t.domain;
    // RFC 7395 §3.1: the 'xmpp' subprotocol (ws refuses a handshake that does not select it).
    // (ws hands its options to tls.connect: the thread's one TLS context, not one built per connection.)
    const opts = { perMessageDeflate: false, rejectUnauthorized: false, secureContext: t.secureContext, servername: t.domain } as WebSocket.ClientOptions;
    const ws = new WebSocket(t.url, 'xmpp', opts);
    this.ws = ws;
    ws.on('open', () => {
      (ws as unknown as { _socket?: { setNoDelay?: (v: boolean) => void } })._socket?.setNoDelay?.(true);
      owner.linkOpened(true);
    });
    ws.on('message', (data: Buffer) => owner.linkFrame(data.toString('utf8')));
    ws.on('error', (err: NodeJS.ErrnoException) => owner.linkError(err.code));
    ws.on('close', () => owner.linkClosed());
  }

  open(): void {
    this.send([`<open xmlns='${NS_FRAMING}' to='${this.domain}' version='1.0'/>`]);
  }

  send(list: string[]): void {
    // RFC 7395 §3.3.3: one element per message.
    if (this.ws.readyState !== WebSocket.OPEN) return;
    for (const s of list) this.ws.send(s);
  }

  close(last: string[]): void {
    this.send([...last, `<close xmlns='${NS_FRAMING}'/>`]);
  }

  end(): void {
    this.ws.close();
  }

  keepalive(): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.ping();
  }

  destroy(): void {
    this.ws.terminate();
  }
}

/**
 * A BOSH session: one request held by the server for what it has to send
 * (hold='1'), elements sent in new requests, never more unanswered than the
 * session's 'requests' (§11), each request the next rid (§14) and the
 * answers taken in rid order, whatever connection they came on.
 */
export class BoshLink implements Link {
  private readonly owner: LinkOwner;
  private readonly domain: string;
  private readonly lib: typeof http | typeof https;
  private readonly agent: http.Agent;
  private readonly url: URL;
  private rid: number;
  /** The rid whose answer is handed over next. */
  private deliver: number;
  private readonly answers = new Map<number, { status: number; text: string }>();
  private sid = '';
  /** §7.2 'requests': unanswered requests allowed at once (what the creation's answer says). */
  private requests = 2;
  private outstanding = 0;
  private queue: string[] = [];
  private created = false;
  private restartDue = false;
  private terminating = false;
  private dead = false;

  constructor(t: WebTarget, owner: LinkOwner) {
    this.owner = owner;
    this.domain = t.domain;
    this.url = new URL(t.url);
    const secure = this.url.protocol === 'https:';
    this.lib = secure ? https : http;
    // Two connections, as a browser keeps for a session (the held request
    // and the one sending), and a third for the termination (§11: one beyond 'requests').
    const opts = { keepAlive: true, maxSockets: 3, noDelay: true };
    this.agent = secure ? new https.Agent({ ...opts, rejectUnauthorized: false, secureContext: t.secureContext, servername: t.domain }) : new http.Agent(opts);
    // §14.1: a random initial rid, far from 2^53.
    this.rid = 1 + Math.floor(Math.random() * 2 ** 31);
    this.deliver = this.rid;
  }

  open(): void {
    if (!this.created) {
      // §7.1 (XEP-0206 §3): the session's creation.
      this.created = true;
      this.post(` to='${this.domain}' wait='${BOSH_WAIT_S}' hold='1' ver='1.11' xml:lang='en' xmpp:version='1.0' xmlns:xmpp='${NS_XBOSH}'`, '');
      return;
    }
    this.restartDue = true;
    this.pump();
  }

  send(list: string[]): void {
    if (this.dead || this.terminating) return;
    for (const s of list) this.queue.push(s);
    this.pump();
  }

  close(last: string[]): void {
    if (this.dead || this.terminating) return;
    this.terminating = true;
    // §13: the termination carries what is left to send.
    this.post(` type='terminate'`, [...this.queue, ...last].join(''));
    this.queue = [];
  }

  end(): void {
    this.destroy();
  }

  keepalive(): void {
    // The held request is answered every 'wait' seconds and replaced.
  }

  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    this.agent.destroy();
  }

  /** Sends what is due within 'requests'; with nothing unanswered, an empty request for the server to hold. */
  private pump(): void {
    if (this.dead || this.terminating || this.sid === '') return;
    while (this.outstanding < this.requests && (this.restartDue || this.queue.length > 0)) {
      if (this.restartDue) {
        // XEP-0206 §5: the restart after SASL, a request of its own.
        this.restartDue = false;
        this.post(` to='${this.domain}' xml:lang='en' xmpp:restart='true' xmlns:xmpp='${NS_XBOSH}'`, '');
        continue;
      }
      const content = this.queue.join('');
      this.queue = [];
      this.post('', content);
    }
    if (this.outstanding === 0) this.post('', '');
  }

  private post(attrs: string, content: string): void {
    const rid = this.rid++;
    const a = `<body xmlns='${NS_HTTPBIND}' rid='${rid}'${this.sid ? ` sid='${this.sid}'` : ''}${attrs}`;
    const text = content === '' ? `${a}/>` : `${a}>${content}</body>`;
    this.outstanding++;
    const req = this.lib.request(
      { protocol: this.url.protocol, hostname: this.url.hostname, port: this.url.port, path: this.url.pathname + this.url.search, method: 'POST', agent: this.agent, headers: { 'Content-Type': 'text/xml; charset=utf-8', 'Content-Length': Buffer.byteLength(text) } },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (data += d));
        res.on('end', () => this.answered(rid, res.statusCode ?? 0, data));
        res.on('error', (err: NodeJS.ErrnoException) => this.error(err.code));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => this.error(err.code));
    req.end(text);
  }

  private error(code: string | undefined): void {
    if (this.dead) return;
    this.destroy();
    this.owner.linkError(code);
  }

  private answered(rid: number, status: number, text: string): void {
    if (this.dead) return;
    this.outstanding--;
    this.answers.set(rid, { status, text });
    // §14.2: the answers in rid order, as the requests were.
    for (let a = this.answers.get(this.deliver); a; a = this.answers.get(this.deliver)) {
      this.answers.delete(this.deliver++);
      this.handle(a.status, a.text);
      if (this.dead) return;
    }
    this.pump();
  }

  private handle(status: number, text: string): void {
    if (status !== 200) return this.error(`bosh:http-${status}`);
    const at = text.indexOf('<body');
    if (at === -1) return this.error('bosh:not-a-body');
    const tag = startTag(text.slice(at));
    if (this.sid === '') {
      this.sid = attr(tag, 'sid') ?? '';
      const requests = Number(attr(tag, 'requests'));
      if (Number.isInteger(requests) && requests > 0) this.requests = requests;
      if (this.sid === '' && attr(tag, 'type') !== 'terminate') return this.error('bosh:no-sid');
      if (this.sid !== '') this.owner.linkOpened(false);
    }
    const content = tag.endsWith('/>') ? '' : text.slice(at + tag.length, text.lastIndexOf('</body>'));
    if (content !== '') this.owner.linkData(content);
    if (this.dead) return;
    if (attr(tag, 'type') === 'terminate') {
      // §13, §17: the session is over; a condition says why, when we did not ask for it.
      this.destroy();
      const condition = attr(tag, 'condition');
      this.owner.linkClosed(condition ? `bosh:${condition}` : undefined);
    }
  }
}
