// XEP-0198 §5 stream resumption, wherever the session is: a session whose
// connection dropped waits, detached, on the worker that held it; the
// client's next connection may land on any worker of any node. The
// connection asks the session's worker (found through the registry) to
// hand the session over; exactly one request wins, since the session's
// own worker hands it over once. The session moves as one message, with
// what the client has not acknowledged; the registry record follows it,
// and what the old worker still receives for it meanwhile is passed on
// (Router.movedTo), so nothing routed during the move is lost.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { parse as parseXml } from 'ltx';
import type { Handoff, Session } from './session.ts';
import type { DurableSessions, Entry } from './durable.ts';
import type { OfflineStore } from '../offline/store.ts';
import { countSince } from '../stream/engine.ts';
import type { SessionRegistry } from '../registry/registry.ts';
import type { Envelope } from '../worker/wire.ts';
import type { Place, Router } from '../router/router.ts';
import { log } from '../log.ts';

/** How long a connection waits for the session's worker to hand it over. */
const TAKE_TIMEOUT_MS = 10_000;
/** How often a connection asks again while the session's node is silent but holds its lease. */
const DEATH_POLL_MS = 250;
const TOKEN = /^[A-Za-z0-9_-]{24}$/;

/**
 * The resumption id given in <enabled/>: the session's full JID, so that
 * any node can find it, and 18 random bytes, so that nobody can guess it.
 * It is honoured only for the account that owns that JID.
 */
export function resumptionId(jid: string, token: string): string {
  return `${Buffer.from(jid).toString('base64url')}.${token}`;
}

export function parseResumptionId(id: string): { jid: string; token: string } | undefined {
  const dot = id.lastIndexOf('.');
  if (dot <= 0 || id.length > 3200) return undefined;
  const token = id.slice(dot + 1);
  if (!TOKEN.test(token)) return undefined;
  const jid = Buffer.from(id.slice(0, dot), 'base64url').toString('utf8');
  const slash = jid.indexOf('/');
  if (slash <= 0 || !jid.slice(0, slash).includes('@')) return undefined;
  return { jid, token };
}

/** Durable entries as a handoff's queue: those from offline storage come again from there, not from here. */
function resendable(entries: Entry[]): Handoff['queue'] {
  return entries.flatMap((e) => (e.o === undefined ? [{ xml: e.x, reroute: e.r }] : []));
}

function sameToken(a: string | undefined, b: string): boolean {
  if (a === undefined || a.length !== b.length) return false;
  return timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** Why a resumption failed (the <failed/> the client gets). */
/** `handled`: the session's own h, when known (§5: the client learns which of its stanzas were handled). */
export type ResumeFailure = { condition: 'item-not-found' } | { condition: 'handled-count-too-high'; sent: number; handled?: number };

export interface ResumptionDeps {
  node: string;
  worker: () => number;
  local: Map<string, Session>;
  sessions: Map<string, Session>;
  registry: SessionRegistry;
  router: Router;
  /** XMPP_SM_DURABLE: where a session whose node died can still be found, and whether a node is dead. */
  durable: DurableSessions | undefined;
  leaseHeld?: (node: string) => Promise<boolean>;
  /** How long a resumption waits for a silent node to be declared dead (its lease, and a little more). */
  deathWaitMs: number;
  /** Offline storage: offline messages a durable session's client acknowledged leave it. */
  offline: OfflineStore;
  maxResources: number;
}

type Taken = Extract<Envelope, { t: 'taken' }>;

export class Resumption {
  private readonly d: ResumptionDeps;
  /** Requests waiting for their 'taken'; the answer is acted on as it arrives (see onTaken). */
  private readonly pending = new Map<number, (env: Taken | 'gone' | undefined) => void>();
  private nextQ = 1;

  constructor(deps: ResumptionDeps) {
    this.d = deps;
  }

  private get here(): Place {
    return { node: this.d.node, worker: this.d.worker() };
  }

  /**
   * `conn` (authenticated as `bare`, not bound) resumes the session `previd`
   * names, with the client's count `h`. Undefined once it is resumed
   * (<resumed/> sent), else why not.
   */
  async resume(conn: Session, bare: string, previd: string, h: number): Promise<ResumeFailure | undefined> {
    const id = parseResumptionId(previd);
    // Another account's session is as unknown as one that never was.
    if (!id || id.jid.slice(0, id.jid.indexOf('/')) !== bare) return { condition: 'item-not-found' };
    const local = this.d.local.get(id.jid);
    if (local) {
      if (!sameToken(local.resumptionToken, id.token)) return { condition: 'item-not-found' };
      // On this worker: handed over and adopted in one step, nothing routed in between.
      const out = await local.handOff(h, conn.createdAt, (handoff) => conn.state === 'wait-bind' && conn.adopt(handoff, previd));
      if ('queue' in out) {
        if (conn.id !== out.sid) this.orphaned(out);
        return undefined;
      }
      return out.gone ? { condition: 'item-not-found' } : { condition: 'handled-count-too-high', sent: out.sent, handled: out.handled };
    }
    const me = this.here;
    const deadline = Date.now() + this.d.deathWaitMs;
    let answer: Taken | 'gone' | undefined;
    for (;;) {
      let rec;
      try {
        rec = (await this.d.registry.resources(bare, true)).find((r) => r.jid === id.jid);
      } catch (err) {
        log.warn('resumption: the registry is unavailable', { jid: id.jid, err: String(err) });
        return { condition: 'item-not-found' };
      }
      if (rec && rec.node === me.node && rec.worker === me.worker) return { condition: 'item-not-found' };
      // No worker holds it (its node died and was swept): only its durable state can bring it back.
      if (!rec) return this.fromDurable(conn, id.jid, id.token, previd, h);
      answer = await this.take(conn, rec, id.token, h, previd);
      if (answer !== 'gone') break;
      // Nobody listens where it was. Its node is dead once its lease has
      // lapsed; until then its subscription may be coming back (a Redis
      // restart), and the session must not be taken from its durable state
      // while it may still live: asked again until one or the other.
      if (!this.d.durable) return { condition: 'item-not-found' };
      const alive = await (this.d.leaseHeld?.(rec.node) ?? Promise.resolve(false)).catch(() => true);
      if (!alive) return this.fromDurable(conn, id.jid, id.token, previd, h);
      if (Date.now() > deadline || conn.state !== 'wait-bind') return { condition: 'item-not-found' };
      await new Promise((r) => setTimeout(r, DEATH_POLL_MS));
    }
    // No answer in time is not death (a slow owner still holds it): that fails, and the client may try again.
    if (!answer) return { condition: 'item-not-found' };
    if (!answer.handoff) return answer.sent !== undefined ? { condition: 'handled-count-too-high', sent: answer.sent, handled: answer.handled } : { condition: 'item-not-found' };
    const handoff = answer.handoff;
    if (conn.id !== handoff.sid) return { condition: 'item-not-found' }; // closed meanwhile: orphaned above
    try {
      // Replaced meanwhile (a new login took the resource), or this node was fenced.
      if (!(await this.d.registry.move(handoff.jid, handoff.sid, me.node, me.worker))) conn.close({ condition: 'conflict', text: 'the session was replaced while it moved', forgotten: true });
    } catch (err) {
      // The record still names the old place: the session ends, and its end removes the record (by its id).
      log.warn('resumption: the registry record could not follow the session; ending it', { jid: handoff.jid, err: String(err) });
      conn.close({ condition: 'internal-server-error', text: 'the session registry is unavailable; try again shortly' });
    }
    return undefined;
  }

  /**
   * XMPP_SM_DURABLE: the session's node died (or never answered), and its
   * state in Redis comes back here, once: what the client did not
   * acknowledge is sent again, what reached the cluster after the death is
   * in offline storage and follows it, and the session is bound again (a
   * new stream id: the dead node's own may still be swept) and, if it was
   * available, says so again to its contacts, who may have seen it leave
   * when its node was declared dead.
   */
  private async fromDurable(conn: Session, jid: string, token: string, previd: string, h: number): Promise<ResumeFailure | undefined> {
    const durable = this.d.durable;
    if (!durable) return { condition: 'item-not-found' };
    let c;
    try {
      c = await durable.claim(jid, token);
    } catch (err) {
      log.warn('resumption: durable state unreachable', { jid, err: String(err) });
      return { condition: 'item-not-found' };
    }
    if (!c) return { condition: 'item-not-found' };
    const m = c.meta;
    const old: Handoff = { ...m, sid: c.sid, token, handled: c.handled, acked: c.acked, queue: resendable(c.queue) };
    const n = countSince(h, c.acked);
    if (n > c.queue.length) {
      // §4: more than was sent. The session is over; what it kept goes where undeliverable stanzas go.
      this.orphaned(old);
      return { condition: 'handled-count-too-high', sent: (c.acked + c.queue.length) >>> 0, handled: c.handled };
    }
    // What the client has is dropped (and offline messages among it leave storage: the dead node never heard the ack);
    // offline messages it did not acknowledge are still stored, and come from there.
    const had = c.queue.slice(0, n).flatMap((e) => (e.o === undefined ? [] : [e.o]));
    if (had.length > 0) await this.d.offline.remove(m.bare.slice(0, m.bare.indexOf('@')), had).catch((err: unknown) => log.warn('offline messages acknowledged but not removed (they will come again)', { jid, err: String(err) }));
    const handoff: Handoff = { ...old, sid: randomBytes(9).toString('base64url'), acked: h >>> 0, queue: resendable(c.queue.slice(n)) };
    const me = this.here;
    try {
      // A new login took the resource meanwhile: it keeps it.
      const now = (await this.d.registry.resources(m.bare, true)).find((r) => r.jid === jid);
      if (now && now.sid !== c.sid) {
        // Its end was announced when its node died; the full JID is the new session's now.
        this.orphaned(old, false);
        return { condition: 'item-not-found' };
      }
      const out = await this.d.registry.bind({ rec: { jid, bare: m.bare, sid: handoff.sid, node: me.node, worker: me.worker, priority: m.priority, available: m.available }, policy: 'new-wins', maxResources: this.d.maxResources, exclusiveBare: false });
      if (out.dropped) await this.d.router.presence.departed(out.dropped);
      if (!out.ok) {
        this.orphaned(old);
        return { condition: 'item-not-found' };
      }
      if (out.replaced && out.replaced.sid !== c.sid) this.d.router.kick(out.replaced, 'conflict', 'replaced by a resumed session');
    } catch (err) {
      log.warn('resumption: the registry is unavailable', { jid, err: String(err) });
      this.orphaned(old);
      return { condition: 'item-not-found' };
    }
    if (conn.state !== 'wait-bind') {
      this.orphaned(handoff);
      return { condition: 'item-not-found' };
    }
    conn.adopt(handoff, previd);
    log.info('session resumed from its durable state', { jid, resent: handoff.queue.length });
    if (handoff.directed) void this.d.registry.noteDirected(jid, handoff.sid, handoff.directed).catch(() => {});
    if (m.available && m.lastPresence !== undefined) {
      // Its contacts may have seen it leave with its node: it is back.
      const presence = parseXml(m.lastPresence);
      delete presence.attrs.to;
      presence.attrs.from = jid;
      void this.d.router.presence.fromClient(presence, conn, undefined, { resumed: true }).catch((err: unknown) => log.warn('presence after a durable resumption failed', { jid, err: String(err) }));
    }
    return undefined;
  }

  /**
   * Asks the worker that holds the session for it. 'gone': nobody listens
   * there (its node or worker died); undefined: no answer in time.
   */
  private take(conn: Session, rec: Place & { jid: string; sid: string }, token: string, h: number, previd: string): Promise<Taken | 'gone' | undefined> {
    const me = this.here;
    log.debug('resumption: asking the worker that holds the session', { jid: rec.jid, node: rec.node, worker: rec.worker });
    const q = this.nextQ++;
    return new Promise<Taken | 'gone' | undefined>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(q);
        resolve(undefined);
      }, TAKE_TIMEOUT_MS);
      this.pending.set(q, (env) => {
        clearTimeout(timer);
        this.pending.delete(q);
        // Adopted as the answer is read, before anything the old worker
        // passes on after it (it may come in the same read from Redis).
        if (env !== undefined && env !== 'gone' && env.handoff) {
          if (conn.state === 'wait-bind') conn.adopt(env.handoff, previd);
          else this.orphaned(env.handoff);
        }
        resolve(env);
      });
      const sent = this.d.router.send(rec, { t: 'take', jid: rec.jid, sid: rec.sid, token, h, since: conn.createdAt, q, node: me.node, worker: me.worker });
      const lost = () => this.pending.get(q)?.('gone');
      if (sent === false) lost();
      else if (sent !== true) void sent.then((ok) => ok || lost(), lost);
    });
  }

  /** On the session's worker: a connection elsewhere asks for it. */
  onTake(env: Extract<Envelope, { t: 'take' }>): void {
    const reply = (answer: Omit<Taken, 't' | 'jid' | 'sid' | 'q'>, handoff?: Handoff) => {
      const sent = this.d.router.send({ node: env.node, worker: env.worker }, { t: 'taken', jid: env.jid, sid: env.sid, q: env.q, ...answer });
      // The asking worker is gone: the session ends here, as if not resumed in time.
      const lost = () => handoff && this.orphaned(handoff);
      if (sent === false) lost();
      else if (sent !== true) void sent.then((ok) => ok || lost(), lost);
    };
    const s = this.d.sessions.get(env.sid);
    if (!s || s.jid !== env.jid || !sameToken(s.resumptionToken, env.token)) return reply({});
    void s.handOff(env.h, env.since).then(
      (out) => {
        if (!('queue' in out)) return reply(out.gone ? {} : { sent: out.sent, handled: out.handled });
        this.d.router.movedTo(env.sid, { node: env.node, worker: env.worker });
        reply({ handoff: out }, out);
      },
      (err: unknown) => {
        log.error('resumption: handing a session over failed', { jid: env.jid, err: String(err) });
        reply({});
      },
    );
  }

  /** On the resuming connection's worker: the answer to its request. */
  onTaken(env: Taken): void {
    const waiting = this.pending.get(env.q);
    if (waiting) return waiting(env);
    // Came after the request gave up: nobody takes the session, which ends here.
    if (env.handoff) this.orphaned(env.handoff);
  }

  /**
   * A session handed over that no connection took: it ends as a detached
   * session whose time ran out (its record removed, its contacts told, what
   * the client did not acknowledge stored or bounced).
   */
  private orphaned(h: Handoff, announce = true): void {
    log.warn('a resumed session found no connection to take it; ending it', { jid: h.jid });
    const router = this.d.router;
    this.d.durable?.forget(h.jid, h.sid);
    if (announce) {
      void this.d.registry.unbind(h.jid, h.sid).catch(() => {});
      router.track(() => router.presence.departed([{ jid: h.jid, bare: h.bare, available: h.available, directed: h.directed ?? [] }]));
    }
    for (const it of h.queue) if (it.reroute) router.rerouted(it.xml, it.reroute, h.sid);
  }
}
