// Instant-messaging helpers for the raw tests of presence, subscriptions,
// offline messages and carbons (RFC 6121, XEP-0160, XEP-0280), on the
// single-node test server or on cluster nodes alike: a peer is logged in by
// port number, over RawClient (STARTTLS, SASL PLAIN, bind).
//
// Nothing here waits on time: each wait is for an element, bounded by a
// timeout that fails with what was awaited. "Nothing else arrived" is checked
// behind a ping (barrier): a session handles its stanzas one at a time and
// finishes what one causes before the next, so the ping's answer comes after
// everything an earlier stanza led to on the same stream.
import type { ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import type { RawClient } from './raw.ts';
import type { NodeProcess } from './cluster.ts';
import type { AccountStore } from '../../src/accounts/store.ts';
import { authenticated, online, pingIq, uid, within } from './protocol.ts';

export const NS_ROSTER = 'jabber:iq:roster';
export const NS_CARBONS = 'urn:xmpp:carbons:2';
export const NS_FORWARD = 'urn:xmpp:forward:0';
export const NS_DELAY = 'urn:xmpp:delay';
/** An XEP-0082 DateTime in UTC, as in a delay stamp (XEP-0203). */
export const STAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
/** How long a test waits for what it expects before it fails. */
export const WAIT = 10_000;

/** One logged-in session: its stream, full and bare JIDs, and account name. */
export interface Peer {
  c: RawClient;
  jid: string;
  bare: string;
  name: string;
}

let n = 0;
/** A fresh account name for this test run. */
export const fresh = (base: string) => `${base}${++n}x${process.pid}`;

/**
 * Logs `name` (password `${name}-pw`) in on `port` with `resource`; the
 * connection is destroyed when the test ends. `what` names the login in a
 * timeout's message.
 */
export async function connect(t: ExecutionContext, port: number, name: string, resource = 'r', what = `${name} logging in`, domain?: string): Promise<Peer> {
  const { c, jid } = await within(online(port, name, `${name}-pw`, resource, domain), WAIT, what);
  t.teardown(() => c.destroy());
  return { c, jid, bare: jid.split('/')[0], name };
}

/** A fresh account on a test server (password `${name}-pw`); its name. */
export async function newAccount(server: { addUser(name: string, password: string): Promise<void> }, base: string): Promise<string> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  return name;
}

/** A fresh account logged in on a test server, its roster requested and its initial presence sent. */
export async function newUser(t: ExecutionContext, server: { c2sPort: number; addUser(name: string, password: string): Promise<void>; config?: { domain: string } }, base: string, resource = 'r'): Promise<Peer> {
  const name = await newAccount(server, base);
  const p = await connect(t, server.c2sPort, name, resource, `${name} logging in`, server.config?.domain);
  await ready(p);
  return p;
}

/**
 * For a file's tests on one cluster: fresh accounts in its account store
 * (`store()`, opened once the cluster is up) and peers logged in on its
 * nodes; `user` also requests the roster and sends initial presence.
 */
export function clusterPeers(store: () => AccountStore, domain?: string) {
  const account = async (base: string): Promise<string> => {
    const name = fresh(base);
    await store().create(name, `${name}-pw`);
    return name;
  };
  const connectTo = (t: ExecutionContext, node: NodeProcess, name: string, resource: string) => connect(t, node.c2sPort, name, resource, `${name}/${resource} logging in to ${node.name}`, domain);
  const user = async (t: ExecutionContext, node: NodeProcess, base: string, resource = node.name): Promise<Peer> => {
    const p = await connectTo(t, node, await account(base), resource);
    await ready(p);
    return p;
  };
  return { account, connect: connectTo, user };
}

/** The first element on p's stream from index `from` that matches. */
export function expect(p: Peer, what: string, pred: (el: Element) => boolean, from = 0, ms = WAIT): Promise<Element> {
  return within(p.c.find(pred, from), ms, `${p.jid}: ${what}`);
}

export const NS_SM = 'urn:xmpp:sm:3';
/** A stream management element (XEP-0198) of that name. */
export const isSm = (name: string) => (el: Element) => el.name === name && el.attrs.xmlns === NS_SM;

/** XEP-0198: p enables stream management with resumption; its resumption id, and the index on its stream after <enabled/>. */
export async function enableResume(p: Peer): Promise<{ id: string; next: number }> {
  const from = p.c.items.length;
  p.c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
  const enabled = await expect(p, '<enabled/>', isSm('enabled'), from);
  return { id: enabled.attrs.id, next: p.c.items.findIndex((it) => it.kind === 'el' && it.el === enabled) + 1 };
}

/** A new connection of p's account on `node` resumes `previd` with `h`: the peer on it, and the answer. */
export async function resumeOn(t: ExecutionContext, node: { c2sPort: number; name: string }, p: Peer, previd: string, h: number): Promise<{ peer: Peer; answer: Element }> {
  const { c } = await within(authenticated(node.c2sPort, p.name, `${p.name}-pw`), WAIT, `${p.name} authenticating on ${node.name}`);
  t.teardown(() => c.destroy());
  c.send(`<resume xmlns='${NS_SM}' previd='${previd}' h='${h}'/>`);
  const answer = await within(c.nextEl(), WAIT, `the answer to <resume/> on ${node.name}`);
  return { peer: { ...p, c }, answer };
}
/** A message with that body. */
export const isBody = (body: string) => (el: Element) => el.name === 'message' && el.getChildText('body') === body;
export const isPresence = (from: string, type?: string) => (el: Element) => el.name === 'presence' && el.attrs.from === from && el.attrs.type === type;
/** The item of a roster query (a push or a set). */
export const rosterItem = (el: Element) => el.getChild('query', NS_ROSTER)?.getChild('item');
/** A roster push (RFC 6121 §2.1.6) about `jid`. */
export const isPush = (jid: string) => (el: Element) => el.name === 'iq' && el.attrs.type === 'set' && rosterItem(el)?.attrs.jid === jid;
/** Roster items as [jid, subscription, ask], for comparing states. */
export const summary = (items: Element[]) => items.map((i) => [i.attrs.jid, i.attrs.subscription, i.attrs.ask]);

/** Gets the roster (RFC 6121 §2.1.3): its items. */
export async function rosterOf(p: Peer): Promise<Element[]> {
  const id = uid('roster');
  const res = await within(p.c.request(`<iq type='get' id='${id}'><query xmlns='${NS_ROSTER}'/></iq>`, id), WAIT, `${p.jid}: roster`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  return res.getChild('query', NS_ROSTER)!.getChildren('item');
}

/** Requests the roster (an interested resource, which gets pushes) and sends initial presence; waits for its echo (§4.2.2). Returns the roster items. */
export async function ready(p: Peer, presence = '<presence/>'): Promise<Element[]> {
  const items = await rosterOf(p);
  const from = p.c.items.length;
  p.c.send(presence);
  await expect(p, 'its own presence', isPresence(p.jid), from);
  return items;
}

/** Waits for a roster push about `jid` in the given state, checks it comes from the account itself (§2.1.6) and answers it; returns the index after it. */
export async function push(t: ExecutionContext, p: Peer, jid: string, subscription: string, ask: string | undefined, from = 0): Promise<number> {
  const el = await expect(p, `roster push for ${jid} (${subscription}${ask ? ` ask=${ask}` : ''})`, (e) => isPush(jid)(e) && rosterItem(e)!.attrs.subscription === subscription && rosterItem(e)!.attrs.ask === ask, from);
  t.false('from' in el.attrs, 'a push comes from the account itself (no from)');
  p.c.send(`<iq type='result' id='${el.attrs.id}'/>`);
  return p.c.items.findIndex((it) => it.kind === 'el' && it.el === el) + 1;
}

/**
 * Sends a ping to the server behind whatever was sent before and returns,
 * once it is answered, the elements received from item `from` up to that
 * answer: everything the earlier stanzas led to on this stream.
 */
export async function barrier(p: Pick<Peer, 'c' | 'jid'>, from: number): Promise<Element[]> {
  const id = uid('barrier');
  // Its own server, whatever its domain.
  const domain = p.jid.slice(p.jid.indexOf('@') + 1).split('/')[0];
  const reply = await within(p.c.request(pingIq(id, domain), id), WAIT, `${p.jid}: barrier ping ${id}`);
  if (reply.attrs.type !== 'result') throw new Error(`ping failed: ${reply.toString()}`);
  const items = p.c.items;
  const end = items.findIndex((it, i) => i >= from && it.kind === 'el' && it.el === reply);
  return items.slice(from, end).flatMap((it) => (it.kind === 'el' ? [it.el] : []));
}

/** a subscribes to b's presence and b approves (both online and ready); waits for the approval and b's presence at a. */
export async function subscribe(a: Peer, b: Peer): Promise<void> {
  const [af, bf] = [a.c.items.length, b.c.items.length];
  a.c.send(`<presence to='${b.bare}' type='subscribe'/>`);
  await expect(b, `${a.bare}'s request`, isPresence(a.bare, 'subscribe'), bf);
  b.c.send(`<presence to='${a.bare}' type='subscribed'/>`);
  await expect(a, 'approval', isPresence(b.bare, 'subscribed'), af);
  await expect(a, `${b.jid}'s presence`, isPresence(b.jid), af);
}

/**
 * `approver` approves the pending subscription request of `requester` (RFC
 * 6121 §3.1.5, §3.1.6): waits for the roster pushes, the approver's first,
 * in the given states, and for the approver's presence at the requester,
 * looking from `rf` on the requester's stream and `af` on the approver's.
 * Returns that presence and the index after the approver's push.
 */
export async function approve(t: ExecutionContext, requester: Peer, approver: Peer, states: { requester: string; approver: string }, rf: number, af: number): Promise<{ presence: Element; next: number }> {
  approver.c.send(`<presence to='${requester.bare}' type='subscribed'/>`);
  const next = await push(t, approver, requester.bare, states.approver, undefined, af);
  await push(t, requester, approver.bare, states.requester, undefined, rf);
  const presence = await expect(requester, `${approver.jid}'s presence after approving`, isPresence(approver.jid), rf);
  return { presence, next };
}

/** Enables or disables carbons (XEP-0280) for p's session; returns the answer. */
export function carbons(p: Peer, action: 'enable' | 'disable'): Promise<Element> {
  const id = uid('carbons');
  return within(p.c.request(`<iq type='set' id='${id}'><${action} xmlns='${NS_CARBONS}'/></iq>`, id), WAIT, `${p.jid}: ${action} carbons`);
}

/** Whether `el` is a carbon (XEP-0280): a message carrying <sent/> or <received/>. */
export const isCarbon = (kind: 'sent' | 'received') => (el: Element) => el.name === 'message' && Boolean(el.getChild(kind, NS_CARBONS));

/** The message a carbon carries (XEP-0280 §6, §7): <sent/> or <received/>, <forwarded/>, <message/>. */
export const carried = (el: Element, kind: 'sent' | 'received') => el.getChild(kind, NS_CARBONS)?.getChild('forwarded', NS_FORWARD)?.getChild('message');

/**
 * Checks a carbon (XEP-0280 §6, §7) and the message it carries: the carbon
 * goes from the account's bare JID to the resource that gets the copy; the
 * carried message is as it was sent. Returns the carried message.
 */
export function checkCarbon(t: ExecutionContext, el: Element, kind: 'sent' | 'received', carbon: { from: string; to: string }, message: { from: string; to: string; body: string }): Element | undefined {
  t.is(el.attrs.from, carbon.from, 'a carbon comes from the bare JID');
  t.is(el.attrs.to, carbon.to);
  const inner = carried(el, kind);
  t.is(inner?.attrs.from, message.from);
  t.is(inner?.attrs.to, message.to);
  t.is(inner?.getChildText('body'), message.body);
  return inner;
}

/**
 * Issue 13 item 2, one round at a time: `a` goes unavailable, then sends an
 * iq to `b` and its initial presence in one write (one TLS record): when `b`
 * has the iq, the server has read the presence behind it, though it handles
 * it only after routing the iq. Then `b` sends a message to `a`'s bare JID.
 * Returns the ids of the messages that came through offline storage (with a
 * delay stamp) instead of live.
 */
export async function messagesAfterPresence(a: Peer, b: Peer, rounds: number): Promise<string[]> {
  const stored: string[] = [];
  for (let round = 0; round < rounds; round++) {
    const start = a.c.items.length;
    a.c.send(`<presence type='unavailable'/>`);
    await barrier(a, start);
    const go = uid('go');
    const id = uid('live');
    const from = a.c.items.length;
    const at = b.c.items.length;
    a.c.send(`<iq type='get' id='${go}' to='${b.jid}'><ping xmlns='urn:xmpp:ping'/></iq><presence/>`);
    await expect(b, `the iq ${go}`, (el) => el.name === 'iq' && el.attrs.id === go, at);
    b.c.send(`<message to='${a.bare}' id='${id}' type='chat'><body>${round}</body></message>`);
    const m = await expect(a, `message ${id}`, (el) => el.name === 'message' && el.attrs.id === id, from);
    if (m.getChild('delay', NS_DELAY)) stored.push(id);
  }
  return stored;
}
