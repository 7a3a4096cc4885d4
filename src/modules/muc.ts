// XEP-0045 Multi-User Chat: the service at conference.<domain>
// (XMPP_MUC_DOMAIN), a hosted service (modules/module.ts). The service's
// own JID answers discovery (its public rooms); every stanza to a room or
// an occupant goes to the room's actor (muc/room.ts), which lives on one
// worker: where `place` says (on one node, a hash of the room's name over
// the workers; in a cluster, the node holding the room's lease,
// muc/placement.ts). A stanza routed elsewhere is passed to that worker.
import { Element } from 'ltx';
import { createHash } from 'node:crypto';
import type { ServerModule } from './module.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { type Jid, JidError, normalizeLocal, parseJid } from '../xmpp/jid.ts';
import { NS_DISCO_INFO, NS_DISCO_ITEMS } from '../xmpp/ns.ts';
import { type RoomStore } from '../muc/store.ts';
import { NS_MUC, Room, errorTo, type RoomDeps } from '../muc/room.ts';
import { log } from '../log.ts';
import '../muc/admin.ts';
import '../muc/moderation.ts';
import '../muc/mam.ts';

/** The most occupants one room takes (muc#roomconfig_maxusers lowers it). */
export const MAX_OCCUPANTS = 1000;
/** The most rooms listed in the service's disco#items. */
const MAX_LISTED = 500;

/** Where a room's actor runs: this worker ('here'), or another (the stanza is passed on there). */
export interface RoomPlacement {
  place(room: string): Promise<'here' | { node: string; worker: number }>;
}

/** One node: the room's actor is on the worker its name hashes to. */
export function hashPlacement(node: string, worker: () => number, workers: number): RoomPlacement {
  return {
    place: async (room) => {
      const w = createHash('sha1').update(room).digest().readUInt32BE(0) % workers;
      return w === worker() ? 'here' : { node, worker: w };
    },
  };
}

export interface MucOptions {
  /** The service's domain. */
  domain: string;
  serverDomain: string;
  store: RoomStore;
  placement: RoomPlacement;
  /** Routes a stanza the service made (resolves once it is on its way: what is sent after it follows it). */
  send: (el: Element) => void | Promise<void>;
  /** Passes a stanza to the worker the room lives on (Router.send with a 'svc' envelope). */
  forward: (place: { node: string; worker: number }, xml: string) => boolean | Promise<boolean>;
  /** The rooms' message archive. */
  archive: RoomDeps['archive'];
  isServiceAdmin: (bare: string) => boolean;
  secret: string;
  maxOccupants?: number;
}

const isEl = (c: Element | string): c is Element => typeof c !== 'string';

export function muc(o: MucOptions): ServerModule & { rooms: Map<string, Room> } {
  /** The rooms whose actor is on this worker, by name. */
  const rooms = new Map<string, Room>();
  /** Rooms being loaded from the store, so that two stanzas make one actor. */
  const loading = new Map<string, Promise<Room | undefined>>();

  const deps: RoomDeps = {
    service: o.domain,
    serverDomain: o.serverDomain,
    store: o.store,
    send: o.send,
    archive: o.archive,
    isServiceAdmin: o.isServiceAdmin,
    closed: (room) => void rooms.delete(room),
    secret: o.secret,
    maxOccupants: o.maxOccupants ?? MAX_OCCUPANTS,
  };

  /** The room's actor on this worker: loaded from the store, or (for a join) a new room; undefined when there is no such room. */
  const roomFor = async (name: string, creating: boolean): Promise<Room | undefined> => {
    const here = rooms.get(name);
    if (here && !here.gone) return here;
    // A room on its way out finishes going first (its archive and store row removed): read before that, it would come back.
    if (here) await here.enqueue(() => {});
    let p = loading.get(name);
    if (!p) {
      p = o.store.get(name).then((stored) => {
        const r = stored ? new Room(deps, stored, true) : undefined;
        if (r) rooms.set(name, r);
        return r;
      }).finally(() => loading.delete(name));
      loading.set(name, p);
    }
    const loaded = await p;
    if (loaded || !creating) return loaded;
    const again = rooms.get(name);
    if (again && !again.gone) return again;
    const fresh = Room.fresh(deps, name);
    rooms.set(name, fresh);
    return fresh;
  };

  /** A stanza to a room or occupant, on the worker the room lives on. */
  const atRoom = async (el: Element, to: Jid, from: Jid): Promise<void> => {
    let name: string;
    try {
      name = normalizeLocal(to.local);
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
      throw new StanzaError('jid-malformed', 'not a room name');
    }
    const joining = el.name === 'presence' && el.attrs.type === undefined && to.resource !== '';
    const room = await roomFor(name, joining);
    if (!room) {
      // §7.2.? / RFC 6120: no such room.
      if (el.attrs.type === 'error' || el.attrs.type === 'result' || (el.name === 'presence' && el.attrs.type === 'unavailable')) return;
      throw new StanzaError('item-not-found', `there is no room ${name} here`);
    }
    await room.handle(el, from, to.resource === '' ? undefined : to.resource);
  };

  /** Handles `el` here if the room lives here, else passes it on. */
  const dispatch = async (el: Element, to: Jid, from: Jid): Promise<void> => {
    try {
      const place = await o.placement.place(to.local);
      if (place === 'here') return await atRoom(el, to, from);
      const sent = await o.forward(place, el.toString());
      if (!sent) throw new StanzaError('service-unavailable', 'the room cannot be reached now; try again shortly', 'wait');
    } catch (err) {
      if (!(err instanceof StanzaError)) log.warn('MUC: stanza not handled', { to: el.attrs.to, err: String(err) });
      const e = err instanceof StanzaError ? err : new StanzaError('internal-server-error', 'the room cannot answer now; try again shortly', 'wait');
      if (el.attrs.type !== 'error' && el.attrs.type !== 'result') o.send(errorTo(el, e));
    }
  };

  // --- the service's own JID -----------------------------------------------

  const discoInfo = (iq: Element): Element => {
    const q = new Element('query', { xmlns: NS_DISCO_INFO });
    if (iq.getChild('query')!.attrs.node !== undefined) throw new StanzaError('item-not-found');
    q.c('identity', { category: 'conference', type: 'text', name: 'Chatrooms' });
    // The rooms have archives (XEP-0313 §7: advertised on each room's JID that keeps one), the service has none.
    for (const f of [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC, 'http://jabber.org/protocol/muc#unique', 'urn:xmpp:occupant-id:0', 'urn:xmpp:ping'].sort()) q.c('feature', { var: f });
    return q;
  };
  const discoItems = async (iq: Element): Promise<Element> => {
    if (iq.getChild('query')!.attrs.node !== undefined) throw new StanzaError('item-not-found');
    const q = new Element('query', { xmlns: NS_DISCO_ITEMS });
    // §6.3: the public rooms.
    for (const r of await o.store.listPublic(MAX_LISTED)) q.c('item', { jid: `${r.room}@${o.domain}`, ...(r.config.name ? { name: r.config.name } : {}) });
    return q;
  };

  return {
    rooms,
    features: [],
    service: {
      domain: o.domain,
      iq: {},
      // Every stanza, whatever it is: rooms have iq of their own (muc/admin.ts).
      handle: async (el, to, from) => {
        if (to.local !== '') return dispatch(el, to, from);
        if (el.name !== 'iq' || (el.attrs.type !== 'get' && el.attrs.type !== 'set')) return;
        const payload = el.children.find(isEl);
        const ns = payload?.attrs.xmlns;
        try {
          let answer: Element | null;
          if (el.attrs.type === 'get' && ns === NS_DISCO_INFO) answer = discoInfo(el);
          else if (el.attrs.type === 'get' && ns === NS_DISCO_ITEMS) answer = await discoItems(el);
          else if (el.attrs.type === 'get' && ns === 'http://jabber.org/protocol/muc#unique') {
            // §10.1.4: a room name nobody has.
            answer = new Element('unique', { xmlns: ns }).t(`${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`);
          } else if (el.attrs.type === 'get' && ns === 'urn:xmpp:ping') answer = null;
          else throw new StanzaError('service-unavailable');
          const r = new Element('iq', { type: 'result', id: el.attrs.id, from: el.attrs.to, to: el.attrs.from });
          if (answer) r.cnode(answer);
          o.send(r);
        } catch (err) {
          if (!(err instanceof StanzaError)) throw err;
          o.send(errorTo(el, err));
        }
      },
      // A stanza another worker passed on: its room lives here (or lived here; then it is passed on again).
      envelope: (el) => {
        let to: Jid;
        let from: Jid;
        try {
          to = jidOf(el.attrs.to);
          from = jidOf(el.attrs.from);
        } catch {
          return;
        }
        void dispatch(el, to, from);
      },
    },
  };
}

const jidOf = (s: string | undefined): Jid => parseJid(s ?? '');
