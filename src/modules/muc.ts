// XEP-0045 Multi-User Chat: the service at conference.<domain>
// (XMPP_MUC_DOMAIN), a hosted service (modules/module.ts). The service's
// own JID answers discovery (its public rooms); every stanza to a room or
// an occupant goes to the room's actor (muc/room.ts), which lives on one
// worker: where `place` says (on one node, a hash of the room's name over
// the workers; in a cluster, the node holding the room's claim,
// muc/placement.ts). A stanza routed elsewhere is passed to that worker.
//
// In a cluster a room's actor mirrors its occupants in Redis
// (muc/occupants.ts) and a node that takes a room over starts from the room
// store and that list. A stanza passed to a room's node that nobody takes
// there (the node died) waits, with those that follow it to the same room
// from this worker, in order, until another node holds the room (its
// node's lease lapsed), then goes there; past the lease bound its sender
// gets an error (wait): none is dropped without a word. What a room sends
// goes out in order (one chain per room) and, to the sessions of another
// node, once per node: the stanza and the list of its sessions there in
// one 'svc-fan' envelope, which that node's worker routes to each.
import { Element, parse as parseXml } from 'ltx';
import { createHash } from 'node:crypto';
import type { ServerModule } from './module.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { type Jid, JidError, normalizeLocal, parseJid } from '../xmpp/jid.ts';
import { NS_DISCO_INFO, NS_DISCO_ITEMS } from '../xmpp/ns.ts';
import { type RoomStore } from '../muc/store.ts';
import { NS_MUC, Room, errorTo, type RoomDeps } from '../muc/room.ts';
import type { ClusterRooms, Place, RoomPlacement } from '../muc/placement.ts';
import { OccupantMirror, parseMirror } from '../muc/occupants.ts';
import type { Envelope } from '../worker/wire.ts';
import { log } from '../log.ts';
import '../muc/admin.ts';
import '../muc/moderation.ts';
import '../muc/mam.ts';

export type { RoomPlacement } from '../muc/placement.ts';

/** The most occupants one room takes (muc#roomconfig_maxusers lowers it). */
export const MAX_OCCUPANTS = 1000;
/** The most rooms listed in the service's disco#items. */
const MAX_LISTED = 500;
/** The most stanzas one worker holds for one room while the room's node is being replaced; more get an error (wait) at once. */
const MAX_STALLED = 1000;

/** One node: the room's actor is on the worker its name hashes to. */
export function hashPlacement(node: string, worker: () => number, workers: number): RoomPlacement {
  return {
    place: async (room) => {
      const w = createHash('sha1').update(room).digest().readUInt32BE(0) % workers;
      return w === worker() ? 'here' : { node, worker: w };
    },
  };
}

/** What a cluster adds: the rooms' claims and occupants in Redis, the registry, this node's lease. */
export interface MucCluster {
  node: string;
  rooms: ClusterRooms;
  /** Where a session is (the registry); `fresh`: not from a cache. Undefined when it is not bound. */
  locate(full: string, fresh?: boolean): Promise<Place | undefined>;
  /** Whether a node's lease holds (a node whose lease lapsed is dead to the cluster). */
  nodeLive(node: string): Promise<boolean>;
  /** Whether this node's own lease holds by its own clock (muc/placement.ts). */
  mayAct(): boolean;
  /** How long a stanza to a room whose node stopped answering waits for another node to take the room. */
  stallMs: number;
}

export interface MucOptions {
  /** The service's domain. */
  domain: string;
  serverDomain: string;
  store: RoomStore;
  /** Where rooms run; in a cluster, `cluster.rooms`. */
  placement: RoomPlacement;
  /** Routes a stanza the service made (resolves once it is on its way: what is sent after it follows it). */
  send: (el: Element) => void | Promise<void>;
  /** Passes an envelope to a worker (Router.send): a stanza for the room that lives there, or a room's fan-out. */
  forward: (place: Place, env: Envelope) => boolean | Promise<boolean>;
  /** The rooms' message archive. */
  archive: RoomDeps['archive'];
  isServiceAdmin: (bare: string) => boolean;
  secret: string;
  maxOccupants?: number;
  cluster?: MucCluster;
}

const isEl = (c: Element | string): c is Element => typeof c !== 'string';

/** What the service asks of a room on its own. */
type Op = { op: 'sweep' } | { op: 'gone'; full: string };

/** A stanza to a room, or an op; numbered in the order this worker took them. */
interface Job {
  room: string;
  seq: number;
  stanza?: { el: Element; to: Jid; from: Jid };
  op?: Op;
}

/** Stanzas held for a room whose node did not take one (see the file's head). */
interface Stalled {
  jobs: Job[];
  since: number;
  failed: Place;
}

/** What the service does once a room's node is judged dead, a worker of this node died, or this node was fenced. */
export interface MucEvents {
  nodeDead(node: string, scan: boolean): void;
  workerDead(index: number, lowestLive: boolean): void;
  fenced(): void;
  /** A session that ended without a word had entered this room (Router.sessionGone): removed with 333. */
  gone(full: string, to: Jid): boolean;
}

export function muc(o: MucOptions): ServerModule & { rooms: Map<string, Room>; events: MucEvents } {
  /** The rooms whose actor is on this worker, by name. */
  const rooms = new Map<string, Room>();
  /** Rooms being loaded from the store, so that two stanzas make one actor. */
  const loading = new Map<string, Promise<Room | undefined>>();
  /** Their mirrors (a cluster). */
  const mirrors = new Map<string, OccupantMirror>();
  const stalled = new Map<string, Stalled>();
  let seq = 0;
  const cl = o.cluster;

  const base: RoomDeps = {
    service: o.domain,
    serverDomain: o.serverDomain,
    store: o.store,
    send: o.send,
    archive: o.archive,
    isServiceAdmin: o.isServiceAdmin,
    closed: (room) => {
      rooms.delete(room);
      const mirror = mirrors.get(room);
      mirrors.delete(room);
      // After its last occupants' removal is written (a release first would make that write look fenced).
      void (mirror?.settled() ?? Promise.resolve()).then(() => o.placement.release?.(room));
    },
    secret: o.secret,
    maxOccupants: o.maxOccupants ?? MAX_OCCUPANTS,
    ...(cl ? { mayAct: () => cl.mayAct() } : {}),
  };

  /** A room stops running here (its claim is another node's): what it still holds goes where it runs now. */
  const evict = (name: string, room: Room): void => {
    room.evicted = true;
    if (rooms.get(name) === room) rooms.delete(name);
    mirrors.delete(name);
    o.placement.forget?.(name);
  };

  /** The actor of a room, with what it needs of this service: its output, and in a cluster its mirror. */
  const actor = (name: string, make: (d: RoomDeps) => Room, restored?: ReturnType<typeof parseMirror>): Room => {
    const out = new Output(name);
    // The mirror's claim can be lost only once the room exists.
    const ref: { room?: Room } = {};
    const d: RoomDeps = {
      ...base,
      send: (el) => out.push(el),
      elsewhere: (el, from, nick) => {
        const to = parseJid(`${name}@${o.domain}${nick !== undefined ? `/${nick}` : ''}`);
        void run({ room: name, seq: ++seq, stanza: { el, to, from } });
      },
    };
    if (cl) {
      const mirror = new OccupantMirror(name, cl.rooms, (full) => (full.split('/')[0].endsWith(`@${o.serverDomain}`) ? cl.locate(full) : Promise.resolve(undefined)), () => {
        log.warn('MUC: a room was claimed by another node; it stops here', { room: name });
        if (ref.room) evict(name, ref.room);
      }, restored);
      mirrors.set(name, mirror);
      d.occupantsChanged = (_room, occupants) => mirror.sync(occupants);
      out.where = (full) => mirror.where.get(full);
    }
    const room = (ref.room = make(d));
    if (restored) room.restore(restored);
    return room;
  };

  /** The room's actor on this worker: loaded from the store, or (for a join) a new room; undefined when there is no such room. */
  const roomFor = async (name: string, creating: boolean): Promise<Room | undefined> => {
    const here = rooms.get(name);
    if (here && !here.gone) return here;
    // A room on its way out finishes going first (its archive and store row removed): read before that, it would come back.
    if (here) await here.enqueue(() => {});
    let p = loading.get(name);
    if (!p) {
      p = (async () => {
        const stored = await o.store.get(name);
        if (!stored) return undefined;
        // Taken over (or loaded again): its occupants as the last node that ran it left them.
        const restored = cl ? parseMirror(await cl.rooms.read(name)) : undefined;
        const r = actor(name, (d) => new Room(d, stored, true), restored);
        rooms.set(name, r);
        // Those whose node is gone leave (333).
        if (restored && restored.length > 0) void r.enqueue(() => sweep(name, r));
        return r;
      })().finally(() => loading.delete(name));
      loading.set(name, p);
    }
    const loaded = await p;
    if (loaded || !creating) return loaded;
    const again = rooms.get(name);
    if (again && !again.gone) return again;
    const fresh = actor(name, (d) => Room.fresh(d, name));
    rooms.set(name, fresh);
    return fresh;
  };

  /** A job on the worker the room lives on. */
  const atRoom = async (job: Job): Promise<void> => {
    const name = job.room;
    if (cl && !cl.mayAct()) {
      if (job.stanza) throw new StanzaError('service-unavailable', 'the room is moving to another node; try again shortly', 'wait');
      return;
    }
    if (job.op) {
      const room = await roomFor(name, false);
      if (!room) return void o.placement.release?.(name);
      const op = job.op;
      await room.enqueue(() => (op.op === 'sweep' ? sweep(name, room) : goneFrom(room, op.full)));
      return;
    }
    const { el, to, from } = job.stanza!;
    const joining = el.name === 'presence' && el.attrs.type === undefined && to.resource !== '';
    const room = await roomFor(name, joining);
    if (!room) {
      void o.placement.release?.(name);
      // §7.2.? / RFC 6120: no such room.
      if (el.attrs.type === 'error' || el.attrs.type === 'result' || (el.name === 'presence' && el.attrs.type === 'unavailable')) return;
      throw new StanzaError('item-not-found', `there is no room ${name} here`);
    }
    await room.handle(el, from, to.resource === '' ? undefined : to.resource);
    // A room nobody managed to create (refused) is not kept.
    if (!room.saved && !room.busy && room.occupants.size === 0 && rooms.get(name) === room) {
      rooms.delete(name);
      mirrors.delete(name);
      void o.placement.release?.(name);
    }
  };

  /** Answers a job that could not be done with its error (stanzas only; what the service asked of itself is dropped). */
  const refuse = (job: Job, err: unknown): void => {
    if (!job.stanza) {
      log.debug('MUC: a room could not be reached for the service', { room: job.room, op: job.op?.op, err: String(err) });
      return;
    }
    const el = job.stanza.el;
    if (!(err instanceof StanzaError)) log.warn('MUC: stanza not handled', { to: el.attrs.to, err: String(err) });
    const e = err instanceof StanzaError ? err : new StanzaError('internal-server-error', 'the room cannot answer now; try again shortly', 'wait');
    if (el.attrs.type !== 'error' && el.attrs.type !== 'result') void o.send(errorTo(el, e));
  };

  const envelopeOf = (job: Job): Envelope =>
    job.stanza ? { t: 'svc', domain: o.domain, xml: job.stanza.el.toString() } : { t: 'svc-ctl', domain: o.domain, room: job.room, op: job.op!.op, ...(job.op!.op === 'gone' ? { full: job.op!.full } : {}) };

  /**
   * Handles a job here if the room lives here, else passes it on. Resolves
   * once it was handled here, or passed on (not once the other worker
   * confirmed it: a node that stopped answering must not hold the sender's
   * stream).
   */
  const run = async (job: Job): Promise<void> => {
    const held = stalled.get(job.room);
    if (held) return hold(held, job);
    try {
      const place = await o.placement.place(job.room);
      if (stalled.has(job.room)) return hold(stalled.get(job.room)!, job);
      if (place === 'here') return await atRoom(job);
      const sent = o.forward(place, envelopeOf(job));
      if (sent === true) return;
      if (sent === false) return notTaken(job, place);
      void sent.then((ok) => ok || notTaken(job, place), () => notTaken(job, place));
    } catch (err) {
      refuse(job, err);
    }
  };

  /** A job passed to `place` that nobody there took: held for the room's next place, in order. */
  const notTaken = (job: Job, place: Place): void => {
    o.placement.forget?.(job.room);
    if (!cl) return refuse(job, new StanzaError('service-unavailable', 'the room cannot be reached now; try again shortly', 'wait'));
    let s = stalled.get(job.room);
    if (!s) {
      s = { jobs: [], since: Date.now(), failed: place };
      stalled.set(job.room, s);
      void retry(job.room, s);
    }
    hold(s, job);
  };

  const hold = (s: Stalled, job: Job): void => {
    if (s.jobs.length >= MAX_STALLED) return refuse(job, new StanzaError('service-unavailable', 'the room cannot be reached now; try again shortly', 'wait'));
    // In the order this worker took them: one passed on before may come back after one held since.
    let i = s.jobs.length;
    while (i > 0 && s.jobs[i - 1].seq > job.seq) i--;
    s.jobs.splice(i, 0, job);
  };

  /** Asks where the room is until it is somewhere else than where it failed (its node's lease lapsed, its worker was replaced), or the bound passes. */
  const retry = async (name: string, s: Stalled): Promise<void> => {
    let wait = 50;
    for (;;) {
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 200);
      let place: 'here' | Place | undefined;
      try {
        place = await o.placement.place(name, { fresh: true });
      } catch {
        place = undefined;
      }
      const moved = place !== undefined && (place === 'here' || place.node !== s.failed.node || place.worker !== s.failed.worker);
      const late = Date.now() - s.since > (cl?.stallMs ?? 0);
      if (moved || late) {
        stalled.delete(name);
        if (!moved) {
          log.warn('MUC: a room could not be reached within the lease bound; its stanzas are refused', { room: name, held: s.jobs.length, node: s.failed.node });
          for (const job of s.jobs) refuse(job, new StanzaError('service-unavailable', 'the room cannot be reached now; try again shortly', 'wait'));
          return;
        }
        for (const job of s.jobs) void run(job);
        return;
      }
    }
  };

  /**
   * The room's occupants whose session is gone leave, with 333: its record
   * is no longer in the registry (its node died and was swept, or started
   * again under a new epoch), or it is on a node whose lease lapsed. Those
   * found elsewhere (a session resumed on another node) stay, there.
   */
  const sweep = async (name: string, room: Room): Promise<void> => {
    const mirror = mirrors.get(name);
    if (!cl || !mirror) return;
    const lives = new Map<string, Promise<boolean>>();
    const live = (node: string) => {
      let p = lives.get(node);
      if (!p) lives.set(node, (p = cl.nodeLive(node)));
      return p;
    };
    const sessions = [...room.sessions()].flatMap(({ full }) => {
      const at = mirror.where.get(full);
      return at && at.node ? [{ full, at }] : [];
    });
    // Looked up side by side (one pipeline of reads), judged in the room's order.
    const found = await Promise.all(sessions.map(async ({ full, at }) => {
      try {
        const rec = await cl.locate(full, true);
        return { full, at, rec, alive: rec ? await live(rec.node) : false };
      } catch {
        return undefined; // Redis away: judged at the next look
      }
    }));
    let moved = false;
    for (const f of found) {
      if (!f || !room.occupantOf(f.full)) continue;
      if (f.rec && f.alive) {
        if (f.rec.node !== f.at.node || f.rec.worker !== f.at.worker) {
          mirror.relocate(f.full, f.rec);
          moved = true;
        }
        continue;
      }
      await goneFrom(room, f.full);
    }
    if (moved) room.changed();
  };

  /** A session that is gone leaves (XEP-0045 status 333: removed because of a technical problem; XEP-0410 §3.2). */
  const goneFrom = async (room: Room, full: string): Promise<void> => {
    const occ = room.occupantOf(full);
    if (occ) await room.leave(occ, full, [333]);
  };

  /** Looks at a room again once its node's lease must have lapsed (a fan-out there was not taken while the lease held). */
  const checking = new Set<string>();
  const checkLater = (name: string): void => {
    if (!cl || checking.has(name)) return;
    checking.add(name);
    setTimeout(() => {
      checking.delete(name);
      void run({ room: name, seq: ++seq, op: { op: 'sweep' } });
    }, cl.stallMs).unref();
  };

  /**
   * A room's output: what it sends, in order, grouped by recipient's node.
   * A run of the same stanza to several sessions of another node crosses
   * once ('svc-fan'); the rest is routed from here, one chain per room so
   * that every recipient gets the room's stanzas in the room's order.
   */
  class Output {
    private readonly name: string;
    private buf: Element[] = [];
    private chain: Promise<void> = Promise.resolve();
    where: ((full: string) => Place | undefined) | undefined;

    constructor(name: string) {
      this.name = name;
    }

    /** The batch `el` goes out with: resolves once it is on its way (what the room sends after it follows it). */
    private batch: { done: Promise<void>; resolve: () => void } | undefined;

    push(el: Element): Promise<void> {
      this.buf.push(el);
      if (!this.batch) {
        let resolve!: () => void;
        const done = new Promise<void>((r) => (resolve = r));
        this.batch = { done, resolve };
        queueMicrotask(() => this.flush());
      }
      return this.batch.done;
    }

    private flush(): void {
      const items = this.buf;
      const batch = this.batch!;
      this.buf = [];
      this.batch = undefined;
      const local = new Map<string, Element[]>();
      const fans: { place: Place; xml: string; to: string[] }[] = [];
      const keep = (el: Element) => {
        const to = el.attrs.to ?? '';
        const list = local.get(to);
        if (list) list.push(el);
        else local.set(to, [el]);
      };
      if (!cl || !this.where) {
        for (const el of items) keep(el);
      } else {
        const keys = items.map(contentOf);
        for (let i = 0; i < items.length;) {
          let j = i + 1;
          while (j < items.length && keys[j] === keys[i]) j++;
          const remote = new Map<string, { worker: number; to: string[] }>();
          for (let k = i; k < j; k++) {
            const to = items[k].attrs.to ?? '';
            const at = this.where(to);
            if (!at || at.node === '' || at.node === cl.node) {
              keep(items[k]);
              continue;
            }
            const g = remote.get(at.node);
            if (g) g.to.push(to);
            else remote.set(at.node, { worker: at.worker, to: [to] });
          }
          for (const [node, g] of remote) fans.push({ place: { node, worker: g.worker }, xml: keys[i], to: g.to });
          i = j;
        }
      }
      // After what the room sent before has left (a session found since goes
      // from routing here to a fan-out: its stanzas keep their order); each
      // recipient's one after the other, recipients side by side.
      const lists = [...local.values()];
      this.chain = this.chain.then(async () => {
        for (const f of fans) this.fan(f.place, f.xml, f.to);
        await Promise.all(lists.map(async (list) => {
          for (const el of list) await o.send(el);
        }));
      }).then(() => {}, (err: unknown) => log.debug('MUC: a room stanza could not be routed', { err: String(err) }));
      void this.chain.then(batch.resolve);
    }

    /** One stanza to several sessions of one node; if nobody there takes it, the room looks at what became of them. */
    private fan(place: Place, xml: string, to: string[]): void {
      const sent = o.forward(place, { t: 'svc-fan', domain: o.domain, xml, to });
      const lost = () => unreachable(this.name, place, xml, to);
      if (sent === false) lost();
      else if (sent !== true) void sent.then((ok) => ok || lost(), lost);
    }
  }

  /**
   * A fan-out to `place` was not taken: its node is gone (its occupants
   * leave, 333), or only that worker (the sessions are looked up again,
   * and get the stanza where they are now, or leave).
   */
  const unreachable = (name: string, place: Place, xml: string, to: string[]): void => {
    const room = rooms.get(name);
    const mirror = mirrors.get(name);
    if (!cl || !room || !mirror) return;
    void room.enqueue(async () => {
      let live: boolean;
      try {
        live = await cl.nodeLive(place.node);
      } catch {
        return checkLater(name);
      }
      if (!live) return sweep(name, room);
      // Its lease holds: a worker that died, or a node that died and is not judged yet.
      checkLater(name);
      for (const full of to) {
        if (!room.occupantOf(full)) continue;
        const rec = await cl.locate(full, true).catch(() => place);
        if (!rec) {
          await goneFrom(room, full);
          continue;
        }
        if (rec.node === place.node && rec.worker === place.worker) continue;
        mirror.relocate(full, rec);
        const el = parseStanza(xml);
        if (!el) continue;
        el.attrs.to = full;
        void o.send(el);
      }
      room.changed();
    });
  };

  /** A stanza to a room or occupant, as a job. */
  const dispatch = (el: Element, to: Jid, from: Jid): Promise<void> => {
    let name: string;
    try {
      name = normalizeLocal(to.local);
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
      if (el.attrs.type !== 'error' && el.attrs.type !== 'result') void o.send(errorTo(el, new StanzaError('jid-malformed', 'not a room name')));
      return Promise.resolve();
    }
    return run({ room: name, seq: ++seq, stanza: { el, to, from } });
  };

  const events: MucEvents = {
    nodeDead(node, scan) {
      if (!cl) return;
      cl.rooms.forgetNode(node);
      if (!scan) return;
      void (async () => {
        let n = 0;
        for await (const page of cl.rooms.roomsOf(node)) {
          for (const room of page) void run({ room, seq: ++seq, op: { op: 'sweep' } });
          n += page.length;
        }
        if (n > 0) log.info('MUC: the rooms of a node that died are looked at', { node, rooms: n });
      })().catch((err: unknown) => log.warn('MUC: the rooms of a node that died could not be listed', { node, err: String(err) }));
    },
    workerDead(index, lowestLive) {
      if (!cl || !lowestLive) return;
      void (async () => {
        for await (const page of cl.rooms.roomsOfWorker(index)) for (const room of page) void run({ room, seq: ++seq, op: { op: 'sweep' } });
      })().catch((err: unknown) => log.warn('MUC: the rooms of a worker that died could not be listed', { worker: index, err: String(err) }));
    },
    fenced() {
      for (const [name, room] of [...rooms]) evict(name, room);
      if (cl) cl.rooms.forgetAll();
    },
    gone(full, to) {
      let name: string;
      try {
        name = normalizeLocal(to.local);
      } catch {
        return true;
      }
      if (name === '') return false;
      void run({ room: name, seq: ++seq, op: { op: 'gone', full } });
      return true;
    },
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
    events,
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
          void o.send(r);
        } catch (err) {
          if (!(err instanceof StanzaError)) throw err;
          void o.send(errorTo(el, err));
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
      // What another worker's service asked of a room that lives here (or lived here).
      control: (env) => {
        if (env.op === 'gone' && env.full === undefined) return;
        void run({ room: env.room, seq: ++seq, op: env.op === 'gone' ? { op: 'gone', full: env.full! } : { op: 'sweep' } });
      },
      gone: (full, to) => events.gone(full, to),
    },
  };
}

const jidOf = (s: string | undefined): Jid => parseJid(s ?? '');

/** A stanza as it is for any recipient: without its 'to' (the key of a run of copies, and what crosses to another node). */
function contentOf(el: Element): string {
  const to = el.attrs.to;
  delete el.attrs.to;
  const xml = el.toString();
  if (to !== undefined) el.attrs.to = to;
  return xml;
}

function parseStanza(xml: string): Element | undefined {
  try {
    return parseXml(xml) as Element;
  } catch {
    return undefined;
  }
}
