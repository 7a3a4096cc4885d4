// Multi-user chat (XEP-0045) over a raw stream: entering rooms, the
// presence and messages they send, and the owner's forms.
import type { Element } from 'ltx';
import { uid, within } from './protocol.ts';
import { WAIT, expect, type Peer } from './im.ts';

export const NS_MUC = 'http://jabber.org/protocol/muc';
export const NS_MUC_USER = `${NS_MUC}#user`;
export const NS_MUC_ADMIN = `${NS_MUC}#admin`;
export const NS_MUC_OWNER = `${NS_MUC}#owner`;

let rooms = 0;
/** A fresh room name for this test run. */
export const freshRoom = (base = 'room') => `${base}${++rooms}x${process.pid}`;

/** The status codes of a MUC presence or message. */
export const codes = (el: Element): number[] => (el.getChild('x', NS_MUC_USER)?.getChildren('status') ?? []).map((s) => Number(s.attrs.code));
/** The <item/> of a MUC presence. */
export const itemOf = (el: Element): Element | undefined => el.getChild('x', NS_MUC_USER)?.getChild('item');

/** A presence from the room about `nick` (of a type, or available). */
export const isOccupant = (roomJid: string, nick: string, type?: string) => (el: Element) => el.name === 'presence' && el.attrs.from === `${roomJid}/${nick}` && el.attrs.type === type;
/** p's own presence in the room (status 110). */
export const isSelf = (roomJid: string, type?: string) => (el: Element) => el.name === 'presence' && el.attrs.from?.startsWith(`${roomJid}/`) && el.attrs.type === type && codes(el).includes(110);
/** The room's subject message (the end of the entering sequence). */
export const isSubject = (roomJid: string) => (el: Element) => el.name === 'message' && el.attrs.type === 'groupchat' && el.attrs.from?.startsWith(roomJid) && el.getChild('subject') !== undefined && el.getChild('body') === undefined;
export const isGroupchat = (roomJid: string, body: string) => (el: Element) => el.name === 'message' && el.attrs.type === 'groupchat' && el.attrs.from?.startsWith(`${roomJid}/`) && el.getChildText('body') === body;

/** Sends presence to enter `room` as `nick`; `x` is the <x xmlns=muc/> content. */
export function sendJoin(p: Peer, roomJid: string, nick: string, x = ''): void {
  p.c.send(`<presence to='${roomJid}/${nick}'><x xmlns='${NS_MUC}'>${x}</x></presence>`);
}

/** Enters an existing room: its own presence (110), then the subject; the index after the subject. */
export async function join(p: Peer, roomJid: string, nick: string, x = ''): Promise<{ self: Element; next: number }> {
  const from = p.c.items.length;
  sendJoin(p, roomJid, nick, x);
  const self = await expect(p, `${nick} entering ${roomJid}`, (el) => isSelf(roomJid)(el) || (el.name === 'presence' && el.attrs.type === 'error'), from);
  if (self.attrs.type === 'error') throw new Error(`${nick} could not enter ${roomJid}: ${self.toString()}`);
  const subject = await expect(p, `the subject of ${roomJid}`, isSubject(roomJid), from);
  return { self, next: p.c.items.findIndex((it) => it.kind === 'el' && it.el === subject) + 1 };
}

export async function iq(p: Peer, type: 'get' | 'set', to: string, inner: string): Promise<Element> {
  const id = uid('muc');
  return within(p.c.request(`<iq type='${type}' id='${id}' to='${to}'>${inner}</iq>`, id), WAIT, `${p.jid}: ${type} to ${to}`);
}

/** Creates `room` with p as owner: enters (201), then configures it with `fields` (an instant room when none). */
export async function createRoom(p: Peer, service: string, nick: string, fields: Record<string, string | string[]> = {}, room = freshRoom()): Promise<string> {
  const roomJid = `${room}@${service}`;
  const from = p.c.items.length;
  sendJoin(p, roomJid, nick);
  const self = await expect(p, `${nick} creating ${roomJid}`, (el) => isSelf(roomJid)(el) || (el.name === 'presence' && el.attrs.type === 'error'), from);
  if (!codes(self).includes(201)) throw new Error(`${roomJid} was not created: ${self.toString()}`);
  const f = Object.entries(fields).map(([k, v]) => `<field var='${k}'>${(Array.isArray(v) ? v : [v]).map((x) => `<value>${x}</value>`).join('')}</field>`).join('');
  const form = Object.keys(fields).length > 0 ? `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>${f}</x>` : `<x xmlns='jabber:x:data' type='submit'/>`;
  const res = await iq(p, 'set', roomJid, `<query xmlns='${NS_MUC_OWNER}'>${form}</query>`);
  if (res.attrs.type !== 'result') throw new Error(`${roomJid} not configured: ${res.toString()}`);
  await expect(p, `the subject of ${roomJid} once configured`, isSubject(roomJid), from);
  return roomJid;
}
