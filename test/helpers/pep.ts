// PEP (XEP-0163) over a raw stream: pubsub requests, data forms, and a
// client's entity capabilities (XEP-0115) with the answer to the server's
// disco#info for them.
import type { Element } from 'ltx';
import type { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { stanzaError, uid, within } from './protocol.ts';
import { WAIT, type Peer } from './im.ts';

export const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
export const NS_OWNER = `${NS_PUBSUB}#owner`;
export const NS_EVENT = `${NS_PUBSUB}#event`;
export const NS_ERRORS = `${NS_PUBSUB}#errors`;
export const NODE_CONFIG = `${NS_PUBSUB}#node_config`;
export const PUBLISH_OPTIONS = `${NS_PUBSUB}#publish-options`;
const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';

export async function iq(p: Peer, type: 'get' | 'set', inner: string, to?: string): Promise<Element> {
  const id = uid('pep');
  return within(p.c.request(`<iq type='${type}' id='${id}'${to ? ` to='${to}'` : ''}>${inner}</iq>`, id), WAIT, `${p.jid}: pubsub ${type}`);
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');

/** A submitted data form (XEP-0004) of that FORM_TYPE. */
export function form(type: string, fields: Record<string, string | string[]>): string {
  const f = Object.entries(fields).map(([k, v]) => `<field var='${k}'>${(Array.isArray(v) ? v : [v]).map((x) => `<value>${esc(x)}</value>`).join('')}</field>`).join('');
  return `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>${type}</value></field>${f}</x>`;
}

export function publish(p: Peer, node: string, payload: string, opts: { id?: string; options?: Record<string, string | string[]>; to?: string } = {}): Promise<Element> {
  const options = opts.options ? `<publish-options>${form(PUBLISH_OPTIONS, opts.options)}</publish-options>` : '';
  return iq(p, 'set', `<pubsub xmlns='${NS_PUBSUB}'><publish node='${esc(node)}'><item${opts.id ? ` id='${esc(opts.id)}'` : ''}>${payload}</item></publish>${options}</pubsub>`, opts.to);
}

export function items(p: Peer, owner: string | undefined, node: string, inner = '', attrs = ''): Promise<Element> {
  return iq(p, 'get', `<pubsub xmlns='${NS_PUBSUB}'><items node='${esc(node)}'${attrs}>${inner}</items></pubsub>`, owner);
}

/** The ids of a result's items, in order. */
export const itemIds = (res: Element): string[] => (res.getChild('pubsub', NS_PUBSUB)?.getChild('items')?.getChildren('item') ?? []).map((i) => i.attrs.id);

/** The pubsub#errors child of an error, by name. */
export const pubsubError = (res: Element): string | undefined => res.getChild('error')?.children.find((c): c is Element => typeof c !== 'string' && c.attrs.xmlns === NS_ERRORS)?.name;

/** A notification (XEP-0060 §7.1.2.1) from `from` about `node`. */
export const isEvent = (from: string, node: string) => (el: Element) => el.name === 'message' && el.attrs.from === from && el.getChild('event', NS_EVENT)?.getChild('items')?.attrs.node === node;

/** XEP-0115 §5.1 for a client of one identity: its verification string's SHA-1. */
export function capsVer(features: string[]): string {
  const s = 'client/pc//pep test<' + [...features].sort().map((f) => `${f}<`).join('');
  return createHash('sha1').update(s).digest('base64');
}

/**
 * Answers every disco#info the server asks of p for its caps node with
 * these features (and `ver`'s identity); returns the count of questions.
 */
export function answerCaps(p: Peer, features: string[], from = 0): { asked: number } {
  const counter = { asked: 0 };
  let at = from;
  void (async () => {
    for (;;) {
      const q = await p.c.find(isCapsQuery, at);
      at = p.c.items.findIndex((it) => it.kind === 'el' && it.el === q) + 1;
      counter.asked++;
      const node = q.getChild('query')!.attrs.node;
      p.c.send(`<iq type='result' id='${q.attrs.id}' to='${q.attrs.from}'><query xmlns='${NS_DISCO_INFO}' node='${node}'><identity category='client' type='pc' name='pep test'/>${features.map((f) => `<feature var='${f}'/>`).join('')}</query></iq>`);
    }
  })().catch(() => {});
  return counter;
}

/** p's client advertises these features: it answers the server's caps questions and sends a presence with their caps. */
export function announceCaps(p: Peer, features: string[]): { asked: number } {
  const asked = answerCaps(p, features, p.c.items.length);
  p.c.send(capsPresence(features));
  return asked;
}

/** A broadcast presence with caps (XEP-0115) naming `ver` (the right one for `features` unless given). */
export const capsPresence = (features: string[], ver = capsVer(features)) => `<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:pep-test' ver='${ver}'/></presence>`;

/** The server's disco#info for a client's caps (XEP-0115 §6.3). */
export const isCapsQuery = (el: Element) => el.name === 'iq' && el.attrs.type === 'get' && Boolean(el.getChild('query', NS_DISCO_INFO)?.attrs.node?.startsWith('urn:pep-test#'));

/** The id of the (first) item of a notification. */
export const eventItemId = (el: Element): string | undefined => el.getChild('event', NS_EVENT)?.getChild('items')?.getChild('item')?.attrs.id;

/** A notification from `from` about `node` carrying the item `id`. */
export const isEventItem = (from: string, node: string, id: string) => (el: Element) => isEvent(from, node)(el) && eventItemId(el) === id;

/**
 * Waits until the server takes `subscriber`'s caps into account for `node`
 * (it answered the server's disco#info, and the answer was processed):
 * `owner` publishes a probe item (a fresh id) to `node` and the subscriber
 * waits a short while for its notification, which the server sends only once
 * it knows the caps ask for the node; repeated a bounded number of times.
 * The probes are items of `node` (the last one its last published item).
 * Returns the index on the subscriber's stream just after the notification.
 */
export async function untilNotified(owner: Peer, subscriber: Peer, node: string, opts: { tries?: number; each?: number; options?: Record<string, string | string[]> } = {}): Promise<number> {
  const { tries = 40, each = 250 } = opts;
  const start = subscriber.c.items.length;
  const probes = new Set<string>();
  const isProbe = (el: Element) => isEvent(owner.bare, node)(el) && probes.has(eventItemId(el) ?? '');
  for (let i = 0; i < tries; i++) {
    const id = uid('probe');
    probes.add(id);
    const res = await publish(owner, node, `<probe xmlns='urn:pep-test:probe'/>`, { id, options: opts.options });
    if (res.attrs.type !== 'result') throw new Error(`probe publish to ${node}: ${res.toString()}`);
    // Any probe so far: an earlier one's notification may come late.
    const got = await within(subscriber.c.find(isProbe, start), each, 'probe').catch(() => undefined);
    if (got) {
      // The caps are known: the last probe's notification comes too; waited for, so that none comes later.
      const last = await within(subscriber.c.find(isEventItem(owner.bare, node, id), start), WAIT, `${subscriber.jid}: probe ${id}`);
      return subscriber.c.items.findIndex((it) => it.kind === 'el' && it.el === last) + 1;
    }
  }
  throw new Error(`${subscriber.jid}: no notification of ${owner.bare}'s ${node} after ${tries} probes: its caps were never taken into account`);
}

/**
 * The elements that reached p from index `from` up to, not including, the
 * first that matches `control` (awaited): what arrived before a control
 * event the test caused after the action it checks.
 */
export async function before(p: Peer, what: string, control: (el: Element) => boolean, from: number): Promise<Element[]> {
  const c = await within(p.c.find(control, from), WAIT, `${p.jid}: ${what}`);
  const items = p.c.items;
  const end = items.findIndex((it, i) => i >= from && it.kind === 'el' && it.el === c);
  return items.slice(from, end).flatMap((it) => (it.kind === 'el' ? [it.el] : []));
}

/** The iq was answered with a result. */
export function ok(t: ExecutionContext, res: Element, what: string): void {
  t.is(res.attrs.type, 'result', `${what}: ${res.toString()}`);
}

/** The iq was refused with this condition, and this pubsub#errors child (or none). */
export function refused(t: ExecutionContext, res: Element, condition: string, pubsub: string | undefined, what: string): void {
  t.is(res.attrs.type, 'error', `${what}: ${res.toString()}`);
  t.is(stanzaError(res).condition, condition, `${what}: ${res.toString()}`);
  t.is(pubsubError(res), pubsub, `${what}: the pubsub#errors condition`);
}

export const NS_DELAY = 'urn:xmpp:delay';

/**
 * A last published item's XEP-0203 delay (XEP-0060 §6.1.7, XEP-0163
 * §4.3.4): one, from `from` (the service), its stamp a UTC date-time
 * (XEP-0082) no earlier than `lo` and no later than `hi`, the times the test
 * took before sending the publish and after its result came back.
 */
export function dated(t: ExecutionContext, el: Element, from: string, lo: number, hi: number, what: string): void {
  const delays = el.getChildren('delay', NS_DELAY);
  t.is(delays.length, 1, `${what}: one XEP-0203 delay: ${el.toString()}`);
  if (delays.length !== 1) return;
  t.is(delays[0].attrs.from, from, `${what}: the delay is the service's`);
  const stamp = String(delays[0].attrs.stamp ?? '');
  t.regex(stamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, `${what}: a UTC date-time (XEP-0082)`);
  const ms = Date.parse(stamp);
  t.true(ms >= lo && ms <= hi, `${what}: stamped ${stamp}, not the publish's time (${new Date(lo).toISOString()} to ${new Date(hi).toISOString()})`);
}

/** A live notification: no XEP-0203 delay. */
export const undated = (el: Element): boolean => el.getChildren('delay', NS_DELAY).length === 0;

/**
 * Resolves once the clock is past `t` (ms): what a last item is sent on
 * after it is then later than its publish, so that a stamp of the time of
 * sending, not of publishing, would fail `dated`.
 */
export async function clockPast(t: number): Promise<void> {
  while (Date.now() <= t) await new Promise((resolve) => setTimeout(resolve, 1));
}
