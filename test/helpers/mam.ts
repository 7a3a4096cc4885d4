// Message Archive Management (XEP-0313) over a raw stream: a query to an
// archive (an account's own, without 'to', or another JID's, a room's),
// the <result/> messages gathered up to the iq's answer, and the <fin/>.
import type { Element } from 'ltx';
import { uid, within } from './protocol.ts';
import { NS_FORWARD, WAIT, type Peer } from './im.ts';

export const NS_MAM = 'urn:xmpp:mam:2';
export const NS_RSM = 'http://jabber.org/protocol/rsm';

export interface Answer {
  iq: Element;
  /** The result messages that came before the answer, in order. */
  results: Element[];
  fin?: Element;
}

/** Sends a MAM iq (a <query/> inside, or anything else; to `to`, or the account's own archive) and gathers the result messages that came before its answer. */
export async function mamIq(p: Peer, inner: string, type = 'set', to = ''): Promise<Answer> {
  const id = uid('mam');
  const from = p.c.items.length;
  const iq = await within(p.c.request(`<iq type='${type}' id='${id}'${to ? ` to='${to}'` : ''}>${inner}</iq>`, id), WAIT, `${p.jid}: mam ${inner.slice(0, 60)}`);
  const results = p.c.items.slice(from).flatMap((it) => (it.kind === 'el' && it.el.name === 'message' && it.el.getChild('result', NS_MAM) ? [it.el] : []));
  return { iq, results, fin: iq.getChild('fin', NS_MAM) };
}

/** A submitted MAM query form with these fields. */
export function form(fields: Record<string, string | string[]>): string {
  const f = Object.entries(fields).map(([k, v]) => `<field var='${k}'>${(Array.isArray(v) ? v : [v]).map((x) => `<value>${x}</value>`).join('')}</field>`).join('');
  return `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>${NS_MAM}</value></field>${f}</x>`;
}

export const rsm = (inner: string) => `<set xmlns='${NS_RSM}'>${inner}</set>`;

/** The archived message a result carries. */
export const forwarded = (r: Element) => r.getChild('result', NS_MAM)!.getChild('forwarded', NS_FORWARD)!.getChild('message')!;

/** The <fin/>'s attributes and RSM set, for comparing. */
export const fin = (a: Answer) => ({ complete: a.fin?.attrs.complete, first: a.fin?.getChild('set', NS_RSM)?.getChildText('first'), last: a.fin?.getChild('set', NS_RSM)?.getChildText('last'), count: a.fin?.getChild('set', NS_RSM)?.getChildText('count') ?? undefined });

/**
 * A query with a queryid (the form's fields, RSM paging, anything else in
 * the <query/>), to `to` or the account's own archive: the answer, the
 * bodies and ids of the results (each checked to carry the queryid).
 */
export async function query(p: Peer, fields: Record<string, string | string[]> = {}, paging = '', extra = '', to = ''): Promise<Answer & { bodies: string[]; ids: string[] }> {
  const qid = uid('q');
  const a = await mamIq(p, `<query xmlns='${NS_MAM}' queryid='${qid}'>${form(fields)}${paging ? rsm(paging) : ''}${extra}</query>`, 'set', to);
  if (a.iq.attrs.type !== 'result') return { ...a, bodies: [], ids: [] };
  for (const r of a.results) if (r.getChild('result', NS_MAM)!.attrs.queryid !== qid) throw new Error(`result of another query: ${r.toString()}`);
  return { ...a, bodies: a.results.map((r) => forwarded(r).getChildText('body') ?? ''), ids: a.results.map((r) => r.getChild('result', NS_MAM)!.attrs.id) };
}
