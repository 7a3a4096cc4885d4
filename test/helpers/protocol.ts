// Protocol-level helpers for the raw tests in test/protocol: stream
// negotiation step by step over RawClient, and assertions on what the server
// answers (stream errors, stanza errors, SASL failures), parsed so that
// attribute order and quoting do not matter.
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import type { ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { RawClient, header, plainAuth } from './raw.ts';

export const NS_CLIENT = 'jabber:client';
export const NS_STREAM = 'http://etherx.jabber.org/streams';
export const NS_STREAMS_ERR = 'urn:ietf:params:xml:ns:xmpp-streams';
export const NS_STANZAS_ERR = 'urn:ietf:params:xml:ns:xmpp-stanzas';
export const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
export const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
export const NS_SESSION = 'urn:ietf:params:xml:ns:xmpp-session';
export const NS_PING = 'urn:xmpp:ping';
export const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';
export const NS_DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';
export const NS_VERSION = 'jabber:iq:version';

export const STARTTLS = `<starttls xmlns='${NS_TLS}'/>`;
export const PROCEED = `<proceed xmlns='${NS_TLS}'/>`;

const isEl = (c: Element | string): c is Element => typeof c !== 'string';
export const childEls = (el: Element): Element[] => el.children.filter(isEl);
const reEscape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Rejects with a clear message if `p` has not settled within `ms`: a bound
 * on a wait for an event that should come quickly, turning a hang into a
 * failure that says what was awaited; never waited out on success. The one
 * implementation (process.ts re-exports it).
 */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/** Waits until `cond()` holds, checking on every turn of the event loop; fails after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${ms} ms`);
    await new Promise<void>((r) => setTimeout(r, 5));
  }
}

let counter = 0;
/** A fresh id for stanzas. */
export const uid = (prefix = 'id') => `${prefix}-${++counter}-${process.pid}`;

/**
 * Reads the server's side of a stream opening: an optional XML declaration,
 * the stream header (its attributes returned) and, unless `features` is
 * false, <stream:features/>.
 */
export async function readStreamStart(c: RawClient): Promise<{ attrs: Record<string, string>; raw: string; features: Element }> {
  let it = await c.next();
  if (it.kind === 'decl') it = await c.next();
  if (it.kind !== 'open') throw new Error(`expected the stream header, got ${it.kind}: ${it.raw}`);
  const features = await c.nextEl('stream:features');
  return { attrs: it.attrs, raw: it.raw, features };
}

/** Connects and negotiates STARTTLS; returns the client with the features of the secured stream. */
export async function secured(port: number, identity?: { cert: string; key: string }, domain?: string, localAddress?: string, prefix?: Buffer): Promise<{ c: RawClient; features: Element }> {
  const c = await RawClient.connect(port, { localAddress, prefix });
  c.send(header(domain));
  await readStreamStart(c);
  c.send(STARTTLS);
  const it = await c.next();
  if (it.kind !== 'el' || it.raw !== PROCEED) throw new Error(`expected ${PROCEED}, got ${it.raw}`);
  await c.starttls(identity);
  c.send(header(domain));
  const { features } = await readStreamStart(c);
  return { c, features };
}

/** STARTTLS, SASL PLAIN and the stream restart: ready to bind. Returns the post-SASL features. */
export async function authenticated(port: number, user: string, password: string, domain?: string): Promise<{ c: RawClient; features: Element }> {
  const { c } = await secured(port, undefined, domain);
  c.send(plainAuth(user, password));
  const ok = await c.nextEl();
  if (ok.name !== 'success') throw new Error(`expected <success/>, got ${ok.toString()}`);
  c.send(header(domain));
  const { features } = await readStreamStart(c);
  return { c, features };
}

/**
 * STARTTLS and SASL PLAIN on a fresh connection, which is then closed:
 * 'success', or the condition of the server's <failure/> (RFC 6120 §6.5),
 * so that a test expecting a login to fail can say why it must fail.
 */
export async function plainOutcome(port: number, user: string, password: string, ms = 10_000): Promise<string | undefined> {
  const { c } = await within(secured(port), ms, `a secured stream to log ${JSON.stringify(user)} in`);
  try {
    c.send(plainAuth(user, password));
    const el = await within(c.nextEl(), ms, `the outcome of SASL PLAIN as ${JSON.stringify(user)}`);
    if (el.name === 'success') return 'success';
    if (el.name !== 'failure' || el.attrs.xmlns !== NS_SASL) throw new Error(`expected <success/> or a SASL <failure/>, got ${el.toString()}`);
    return saslCondition(el);
  } finally {
    c.destroy();
  }
}

/** STARTTLS, SASL ANONYMOUS (XEP-0175) and the stream restart: ready to bind. Returns the post-SASL features. */
export async function authenticatedAnonymously(port: number): Promise<{ c: RawClient; features: Element }> {
  const { c } = await secured(port);
  c.send(`<auth xmlns='${NS_SASL}' mechanism='ANONYMOUS'/>`);
  const ok = await c.nextEl();
  if (ok.name !== 'success') throw new Error(`expected <success/>, got ${ok.toString()}`);
  c.send(header());
  const { features } = await readStreamStart(c);
  return { c, features };
}

export const bindIq = (id: string, resource?: string) =>
  resource === undefined
    ? `<iq type='set' id='${id}'><bind xmlns='${NS_BIND}'/></iq>`
    : `<iq type='set' id='${id}'><bind xmlns='${NS_BIND}'><resource>${resource}</resource></bind></iq>`;

/** Sends a bind request and returns the reply (result or error). */
export async function bind(c: RawClient, resource?: string): Promise<Element> {
  const id = uid('bind');
  return c.request(bindIq(id, resource), id);
}

/** Authenticates, binds `resource` and returns the client (positioned after the bind result) and its full JID. */
export async function online(port: number, user: string, password: string, resource?: string, domain?: string): Promise<{ c: RawClient; jid: string }> {
  const { c } = await authenticated(port, user, password, domain);
  const r = await bind(c, resource);
  const jid = r.getChild('bind', NS_BIND)?.getChildText('jid');
  if (r.attrs.type !== 'result' || !jid) throw new Error(`bind failed: ${r.toString()}`);
  c.mark();
  return { c, jid };
}

/**
 * The clients already logged in are unaffected by what another connection
 * did: `watcher` is still connected, the server answers its ping, and a
 * message from `talker` reaches it, stamped with the talker's JID.
 */
export async function othersUnaffected(t: ExecutionContext, watcher: { c: RawClient; jid: string }, talker: { c: RawClient; jid: string }): Promise<void> {
  t.false(watcher.c.isClosed, 'the bystander is still connected');
  const pong = await within(ping(watcher.c), 5000, 'bystander ping');
  t.is(pong.attrs.type, 'result');
  const id = uid('msg');
  talker.c.send(`<message to='${watcher.jid}' id='${id}' type='chat'><body>still here</body></message>`);
  const m = await within(watcher.c.find((el) => el.name === 'message' && el.attrs.id === id), 5000, 'bystander message');
  t.is(m.attrs.from, talker.jid);
  t.is(m.getChildText('body'), 'still here');
}

export const pingIq = (id: string, to = 'localhost') => `<iq type='get' id='${id}' to='${to}'><ping xmlns='${NS_PING}'/></iq>`;

/** Pings the server; returns the reply (any type). */
export async function ping(c: RawClient, to = 'localhost'): Promise<Element> {
  const id = uid('ping');
  return c.request(pingIq(id, to), id);
}

/** The defined condition and type of an error stanza's <error/> child (RFC 6120 §8.3.2). */
export function stanzaError(el: Element): { type: string | undefined; condition: string | undefined; by?: string } {
  const err = el.getChild('error');
  if (!err) return { type: undefined, condition: undefined };
  const cond = childEls(err).find((c) => c.attrs.xmlns === NS_STANZAS_ERR && c.name !== 'text');
  return { type: err.attrs.type, condition: cond?.name, by: err.attrs.by };
}

/** The one condition child of a SASL <failure/> (RFC 6120 §6.5). */
export function saslCondition(el: Element): string | undefined {
  const conds = childEls(el).filter((c) => c.name !== 'text');
  return conds.length === 1 ? conds[0].name : `(${conds.length} conditions: ${conds.map((c) => c.name).join(', ')})`;
}

/** Reads the next element, which must be a SASL <failure/>; returns its condition. */
export async function nextSaslFailure(t: ExecutionContext, c: RawClient): Promise<string | undefined> {
  const it = await c.next();
  if (it.kind !== 'el' || it.el.name !== 'failure') {
    t.fail(`expected a SASL <failure/>, got ${it.kind}: ${it.raw}`);
    return undefined;
  }
  t.is(it.el.attrs.xmlns, NS_SASL, 'the failure is qualified by the SASL namespace');
  return saslCondition(it.el);
}

/**
 * Asserts that what comes next is exactly a stream error with `condition`
 * (RFC 6120 §4.9), then `</stream:stream>`, and that the server then closes
 * the connection. With `header`, the server's stream header must come
 * first (§4.9.1.2: the error answers an initial header or what precedes it).
 */
export async function expectStreamError(t: ExecutionContext, c: RawClient, condition: string, opts: { header?: boolean; ns?: string } = {}): Promise<void> {
  let it = await within(c.next(), 5000, `stream error <${condition}/>`);
  if (opts.header) {
    if (it.kind === 'decl') it = await c.next();
    t.is(it.kind, 'open', `the server opens its stream before the error; got ${it.raw}`);
    if (it.kind === 'open') {
      t.is(it.attrs['xmlns:stream'], NS_STREAM);
      t.is(it.attrs.xmlns, opts.ns ?? NS_CLIENT);
    }
    it = await c.next();
  }
  if (it.kind !== 'el' || it.el.name !== 'stream:error') {
    t.fail(`expected <stream:error/> with <${condition}/>, got ${it.kind}: ${it.raw}`);
    return;
  }
  const conds = childEls(it.el).filter((x) => x.name !== 'text');
  t.deepEqual(conds.map((x) => `${x.name} ${x.attrs.xmlns}`), [`${condition} ${NS_STREAMS_ERR}`], `stream error: ${it.raw}`);
  t.regex(it.raw, new RegExp(`<${condition} xmlns=(["'])${reEscape(NS_STREAMS_ERR)}\\1/>`));
  const close = await within(c.next(), 5000, 'closing tag after the stream error');
  t.is(close.raw, '</stream:stream>', 'the stream error is followed by the closing tag');
  await within(c.closed, 1500, 'the server closing the connection');
  t.true(c.isClosed);
}

export const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');

/** RFC 5802 §3, computed independently of the server's implementation. */
export function scramClient(hash: 'sha1' | 'sha256', password: string, clientFirstBare: string, serverFirst: string, cbind: string) {
  const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
  const salted = pbkdf2Sync(password, Buffer.from(attrs.s, 'base64'), Number(attrs.i), hash === 'sha1' ? 20 : 32, hash);
  const hmac = (key: Buffer, s: string) => createHmac(hash, key).update(s).digest();
  const clientKey = hmac(salted, 'Client Key');
  const storedKey = createHash(hash).update(clientKey).digest();
  const finalNoProof = `c=${b64(cbind)},r=${attrs.r}`;
  const authMessage = `${clientFirstBare},${serverFirst},${finalNoProof}`;
  const sig = hmac(storedKey, authMessage);
  const proof = Buffer.from(clientKey.map((b, i) => b ^ sig[i]));
  const serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
  return { attrs, clientFinal: `${finalNoProof},p=${proof.toString('base64')}`, serverSignature };
}

