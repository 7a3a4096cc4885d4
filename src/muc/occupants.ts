// A room's occupants mirrored for the node that would take the room over
// (muc/placement.ts says where and how the writes are fenced). The room's
// actor calls sync() after each change of its occupants; the mirror writes
// only what changed since the last write that went through (a whole
// replacement after one that failed), one write at a time, in order, and
// the room waits for it before its next stanza: a node that dies leaves at
// most the change of the stanza it was handling unwritten. Each session's
// entry says where the session is (node and worker, from the registry, looked up
// once when it enters), which the room's fan-out groups by and which a
// dead node's occupants are found by.
import { Element, parse as parseXml } from 'ltx';
import type { MirrorStore, Place } from './placement.ts';
import { NS_MUC, NS_MUC_USER, NS_OCCUPANT_ID, type Occupant, type Role } from './room.ts';
import { log } from '../log.ts';

/** The most characters of an occupant's last presence kept in the mirror; a longer one is cut to its show, status, priority and caps. */
export const MAX_PRESENCE = 2048;
const MAX_STATUS = 512;
const ROLES: readonly Role[] = ['moderator', 'participant', 'visitor'];

/** One session of an occupant, as mirrored. */
export interface MirroredSession {
  full: string;
  nick: string;
  bare: string;
  role: Role;
  /** Where the session is; node '' when unknown (a peer server's user). */
  at: Place;
  presence: Element;
}

interface Entry {
  n: string;
  b: string;
  r: Role;
  w: string;
  k: number;
  p: string;
}

const isEl = (c: Element | string): c is Element => typeof c !== 'string';

/** What of a session's last presence is kept: what the occupant said of itself, within MAX_PRESENCE. */
export function keptPresence(el: Element | undefined): string {
  const p = new Element('presence');
  if (el) for (const c of el.children) if (isEl(c) && c.attrs.xmlns !== NS_MUC && c.attrs.xmlns !== NS_MUC_USER && c.attrs.xmlns !== NS_OCCUPANT_ID) p.cnode(c);
  const xml = p.toString();
  if (xml.length <= MAX_PRESENCE) return xml;
  const small = new Element('presence');
  for (const c of p.children) {
    if (!isEl(c)) continue;
    if (c.name === 'show' || c.name === 'priority') small.c(c.name).t(c.getText().slice(0, 16));
    else if (c.name === 'status') small.c('status').t(c.getText().slice(0, MAX_STATUS));
    else if (c.name === 'c' && c.attrs.xmlns === 'http://jabber.org/protocol/caps') small.c('c', { xmlns: c.attrs.xmlns, hash: String(c.attrs.hash ?? '').slice(0, 32), node: String(c.attrs.node ?? '').slice(0, 256), ver: String(c.attrs.ver ?? '').slice(0, 128) });
  }
  return small.toString();
}

/** The sessions of a mirror as read back (entries that cannot be read are skipped). */
export function parseMirror(entries: Map<string, string>): MirroredSession[] {
  const out: MirroredSession[] = [];
  for (const [full, json] of entries) {
    try {
      const e = JSON.parse(json) as Entry;
      if (typeof e.n !== 'string' || typeof e.b !== 'string' || !ROLES.includes(e.r)) continue;
      const presence = parseXml(typeof e.p === 'string' ? e.p : '<presence/>') as Element;
      out.push({ full, nick: e.n, bare: e.b, role: e.r, at: { node: typeof e.w === 'string' ? e.w : '', worker: typeof e.k === 'number' ? e.k : -1 }, presence });
    } catch {
      // a damaged entry: that session is not restored
    }
  }
  return out;
}

interface Snapshot {
  full: string;
  nick: string;
  bare: string;
  role: Role;
  presence: string;
}

export class OccupantMirror {
  private readonly room: string;
  private readonly store: MirrorStore;
  private readonly locate: (full: string) => Promise<Place | undefined>;
  private readonly lost: () => void;
  /** Where each session is, by full JID. */
  readonly where = new Map<string, Place>();
  /** What the mirror holds, as last written (undefined: unknown, the next write replaces it). */
  private written: Map<string, string> | undefined;
  private nodes = new Set<string>();
  private latest: Snapshot[] | undefined;
  private next: Promise<void> | undefined;
  private tail: Promise<void> = Promise.resolve();

  constructor(room: string, store: MirrorStore, locate: (full: string) => Promise<Place | undefined>, lost: () => void, restored?: MirroredSession[]) {
    this.room = room;
    this.store = store;
    this.locate = locate;
    this.lost = lost;
    if (restored) {
      this.written = new Map();
      for (const s of restored) {
        this.where.set(s.full, s.at);
        this.written.set(s.full, entryOf(s.nick, s.bare, s.role, s.at, s.presence.toString()));
        if (s.at.node) this.nodes.add(s.at.node);
      }
    }
  }

  /** The room's occupants changed: mirrored after the writes before. Resolves once written (or failed: logged, and the next one replaces it all). */
  sync(occupants: readonly Occupant[]): Promise<void> {
    const snap: Snapshot[] = [];
    for (const o of occupants) for (const [full, p] of o.sessions) snap.push({ full, nick: o.nick, bare: o.bare, role: o.role, presence: keptPresence(p) });
    this.latest = snap;
    if (!this.next) {
      const run = this.tail.then(() => {
        this.next = undefined;
        return this.flush(this.latest!);
      });
      this.next = run;
      this.tail = run.catch(() => {});
    }
    return this.next;
  }

  /** Resolves once every write asked for so far is done. */
  settled(): Promise<void> {
    return this.tail;
  }

  /** A session's place as found again (it moved, or its node is being judged). */
  relocate(full: string, at: Place): void {
    this.where.set(full, at);
  }

  private async flush(snap: Snapshot[]): Promise<void> {
    const unknown = snap.filter((s) => !this.where.has(s.full));
    if (unknown.length > 0) {
      const found = await Promise.all(unknown.map((s) => this.locate(s.full).catch(() => undefined)));
      unknown.forEach((s, i) => this.where.set(s.full, found[i] ?? { node: '', worker: -1 }));
    }
    const entries = new Map<string, string>();
    const nodes = new Set<string>();
    for (const s of snap) {
      const at = this.where.get(s.full) ?? { node: '', worker: -1 };
      entries.set(s.full, entryOf(s.nick, s.bare, s.role, at, s.presence));
      if (at.node) nodes.add(at.node);
    }
    for (const full of [...this.where.keys()]) if (!entries.has(full)) this.where.delete(full);
    const replace = this.written === undefined;
    const set: [string, string][] = [];
    const del: string[] = [];
    for (const [full, json] of entries) if (replace || this.written!.get(full) !== json) set.push([full, json]);
    if (!replace) for (const full of this.written!.keys()) if (!entries.has(full)) del.push(full);
    const on = [...nodes].filter((n) => replace || !this.nodes.has(n));
    const off = replace ? [] : [...this.nodes].filter((n) => !nodes.has(n));
    if (!replace && set.length === 0 && del.length === 0 && on.length === 0 && off.length === 0) return;
    let ok: boolean;
    try {
      ok = await this.store.write(this.room, { replace, set, del, on, off });
    } catch (err) {
      // Written whole next time.
      this.written = undefined;
      log.warn('MUC: the occupants of a room could not be mirrored', { room: this.room, err: String(err) });
      return;
    }
    if (!ok) {
      this.written = undefined;
      this.lost();
      return;
    }
    this.written = entries;
    this.nodes = nodes;
  }
}

function entryOf(nick: string, bare: string, role: Role, at: Place, presence: string): string {
  return JSON.stringify({ n: nick, b: bare, r: role, w: at.node, k: at.worker, p: presence } satisfies Entry);
}
