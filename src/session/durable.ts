// XMPP_SM_DURABLE: a resumable session's state kept in Redis as it changes,
// so that a client whose node was killed resumes on a surviving node with
// nothing lost (XEP-0198 §5). Per session: a hash of its counts and state
// (xmpp:sm:<sid>), the list of what the client has not acknowledged and
// what waits to be sent (xmpp:smq:<sid>, in order: pushed as queued,
// trimmed from the head as acknowledged), and an index from its full JID
// (xmpp:smj:<jid>), which is what a resumption id names. The writes of one
// turn of the event loop go in one pipeline, sent ahead of the cluster
// transport's confirmations of the envelopes that queued them (so a sender
// forgets a stanza only once it is kept here); should one fail, the
// session's state is written whole at its next change. When a node's
// sessions are swept after its death, their durable state expires after
// their resumption window (registry/redis.ts, forget()); a session that
// ends normally deletes it. Only the cluster has it: on a single node
// nothing survives the process anyway.
import { createHash } from 'node:crypto';
import type { ChainableCommander, Redis } from 'ioredis';
import { K } from '../registry/redis.ts';
import type { Reroute } from '../stream/engine.ts';
import type { SessionState } from './session.ts';
import { log } from '../log.ts';

/** One queued stanza: its XML, what becomes of it if never delivered, and its id in offline storage if it came from there (and is still there). */
export interface Entry {
  x: string;
  r?: Reroute;
  o?: string;
}


/** A session as the durable state needs it (Session implements it). */
export interface DurableSession {
  readonly id: string;
  snapshot(): SessionState;
  durableCounts(): { handled: number; acked: number };
  durableQueue(): Entry[];
}

/** What a claim returns: everything to resume the session elsewhere. */
export interface Claimed {
  sid: string;
  meta: SessionState;
  handled: number;
  acked: number;
  queue: Entry[];
}

const hashToken = (token: string) => createHash('sha256').update(token).digest('base64url');

// ARGV: full JID, token hash. The session's state, if the token is its own, then gone from Redis.
const CLAIM = `
local sid = redis.call('GET', 'xmpp:smj:' .. ARGV[1])
if not sid then return false end
local h = redis.call('HGETALL', 'xmpp:sm:' .. sid)
local t = {}
for i = 1, #h, 2 do t[h[i]] = h[i + 1] end
if t.token ~= ARGV[2] then return false end
local q = redis.call('LRANGE', 'xmpp:smq:' .. sid, 0, -1)
redis.call('DEL', 'xmpp:sm:' .. sid, 'xmpp:smq:' .. sid, 'xmpp:smj:' .. ARGV[1])
return {sid, t.meta, t.handled, t.acked, q}`;

// ARGV: full JID, sid. The index goes only if it still names this session.
const CLOSE = `
redis.call('DEL', 'xmpp:sm:' .. ARGV[2], 'xmpp:smq:' .. ARGV[2])
if redis.call('GET', 'xmpp:smj:' .. ARGV[1]) == ARGV[2] then redis.call('DEL', 'xmpp:smj:' .. ARGV[1]) end
return 1`;

type Scripted = Redis & {
  xmppSmClaim(...args: string[]): Promise<[string, string, string, string, string[]] | null>;
};
type ScriptedPipeline = ChainableCommander & { xmppSmClose(...args: string[]): ChainableCommander };

export class DurableSessions {
  private readonly r: Scripted;
  private batch: ScriptedPipeline | undefined;
  /** Sessions with writes in the batch: their state is written with it. */
  private touched = new Set<DurableSession>();
  /** Sessions whose last batch failed: written whole at their next change. */
  private readonly broken = new WeakSet<DurableSession>();
  /** The last pipeline sent, until it is answered. */
  private inflight: Promise<unknown> = Promise.resolve();

  constructor(r: Redis) {
    r.defineCommand('xmppSmClaim', { numberOfKeys: 0, lua: CLAIM });
    r.defineCommand('xmppSmClose', { numberOfKeys: 0, lua: CLOSE });
    this.r = r as Scripted;
  }

  /** This turn's pipeline; `s`: a session whose state goes with it. */
  private pipe(s?: DurableSession): ScriptedPipeline {
    if (!this.batch) {
      this.batch = this.r.pipeline() as ScriptedPipeline;
      setImmediate(() => this.send());
    }
    if (s) this.touched.add(s);
    return this.batch;
  }

  private send(): void {
    const b = this.batch;
    if (!b) return; // sent already (written())
    const touched = this.touched;
    this.batch = undefined;
    this.touched = new Set();
    // The state that goes with these writes (presence, carbons...), as it is now.
    for (const s of touched) if (!this.broken.has(s)) b.hset(K.sm(s.id), 'meta', JSON.stringify(s.snapshot()));
    this.inflight = b.exec().then(
      (results) => {
        if (results?.some(([err]) => err)) for (const s of touched) this.broken.add(s);
      },
      (err: unknown) => {
        log.warn('durable stream management state not written; written whole at the next change', { sessions: touched.size, err: String(err) });
        for (const s of touched) this.broken.add(s);
      },
    );
  }

  /** Sends this turn's writes now, ahead of whatever is sent after them on the same connection (cluster/transport.ts: confirmations). */
  flush(): void {
    if (this.batch) this.send();
  }

  /** Resolves once what was written so far has reached Redis (or failed): before a session moves to another worker. */
  async written(): Promise<void> {
    this.flush();
    await this.inflight;
  }

  /** Writes the session's whole state (resumption enabled, resumed here, or after a failed write). */
  open(s: DurableSession, token: string): void {
    this.broken.delete(s);
    const p = this.pipe(s);
    const { handled, acked } = s.durableCounts();
    const meta = s.snapshot();
    p.del(K.sm(s.id), K.smq(s.id));
    p.hset(K.sm(s.id), { token: hashToken(token), handled: String(handled), acked: String(acked), resumeMs: String(meta.resumeMs), meta: JSON.stringify(meta) });
    p.set(K.smj(meta.jid), s.id);
    const q = s.durableQueue();
    if (q.length > 0) p.rpush(K.smq(s.id), ...q.map((e) => JSON.stringify(e)));
  }

  /** A stanza queued for the client, in order. */
  push(s: DurableSession, token: string, e: Entry): void {
    if (this.broken.has(s)) return this.open(s, token);
    this.pipe(s).rpush(K.smq(s.id), JSON.stringify(e));
  }

  /** The client acknowledged `n` more, up to its count `h`. */
  ack(s: DurableSession, token: string, n: number, h: number): void {
    if (this.broken.has(s)) return this.open(s, token);
    this.pipe(s).ltrim(K.smq(s.id), n, -1).hset(K.sm(s.id), 'acked', String(h));
  }

  /** The client's stanzas handled so far (our h). */
  handled(s: DurableSession, token: string, h: number): void {
    if (this.broken.has(s)) return this.open(s, token);
    this.pipe(s).hset(K.sm(s.id), 'handled', String(h));
  }

  /** The session ended (or will not be resumed): its state goes. */
  close(s: DurableSession, jid: string): void {
    this.broken.delete(s);
    // Not touched: its state must not be written back after it.
    this.touched.delete(s);
    this.pipe().xmppSmClose(jid, s.id);
  }

  /** The state of a session that will never be resumed (handed over to nobody), if any. */
  forget(jid: string, sid: string): void {
    this.pipe().xmppSmClose(jid, sid);
  }

  /** Takes the state of the session `jid` if `token` is its own; it is gone from Redis then. */
  async claim(jid: string, token: string): Promise<Claimed | undefined> {
    const got = await this.r.xmppSmClaim(jid, hashToken(token));
    if (!got) return undefined;
    const [sid, meta, handled, acked, queue] = got;
    return { sid, meta: JSON.parse(meta) as SessionState, handled: Number(handled), acked: Number(acked), queue: queue.map((e) => JSON.parse(e) as Entry) };
  }
}
