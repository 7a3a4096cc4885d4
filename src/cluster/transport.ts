// Envelopes between nodes over Redis pub/sub, sent until confirmed and
// handled once. Pub/sub alone delivers at most once and says nothing when a
// command times out (Redis frozen, then resumed, runs it late): a sender
// that took a timeout for "not delivered" bounced messages that were, and
// one whose receiver died between PUBLISH and handling lost them. So each
// envelope carries a number per (sender, receiver) pair; the receiving
// worker confirms it once handled (confirmations batched per sender), and
// drops a copy it handled already; the sender publishes again, with
// backoff, until it is confirmed or until Redis says nobody listens on that
// channel any more (the node is gone): only then is it "not taken", and the
// caller's undeliverable path (another resource, offline storage, an error)
// follows. An error to a client thus means "not delivered".
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { K } from '../registry/redis.ts';
import { decode, encodeBuffer } from '../worker/wire.ts';
import type { Envelope } from '../worker/wire.ts';
import { log } from '../log.ts';

/** What crosses between nodes on a worker's channel. */
export type NodeMessage =
  // an envelope from (node, worker) in its incarnation `inc` (a restarted
  // node numbers from 1 again), number `n` of that sender's to this channel
  | { t: 'env'; node: string; worker: number; inc: string; n: number; env: Envelope }
  // envelopes this channel's worker sent, in its incarnation `inc`, to `to`, that were handled there
  | { t: 'ok'; node: string; worker: number; inc: string; to: string; ns: number[] };

/** First wait for a confirmation before publishing again; doubled up to RETRY_MAX_MS. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 5000;
/** Past this without a confirmation or a "nobody listens", the outcome is given up as unknown (logged). */
const GIVE_UP_MS = 5 * 60_000;
/** Numbers seen out of order from one sender that are kept; beyond it the oldest gap is taken as filled. */
const MAX_AHEAD = 100_000;
/** A sender silent this long is forgotten (a node that left). */
const SENDER_IDLE_MS = 30 * 60_000;

interface Pending {
  channel: string;
  n: number;
  msg: Buffer;
  resolve: (taken: boolean) => void;
  since: number;
  wait: number;
  timer: NodeJS.Timeout | undefined;
}

/** What one receiver knows of one sender: every number up to `floor` was handled, and those in `ahead`. */
interface Seen {
  floor: number;
  ahead: Set<number>;
  at: number;
}

export class NodeTransport {
  private readonly cmd: Redis;
  private readonly node: string;
  private readonly worker: () => number;
  private readonly handle: (env: Envelope) => void;
  private readonly inc = randomBytes(6).toString('base64url');
  /** Next number per receiving channel. */
  private readonly numbers = new Map<string, number>();
  /** Sent and not confirmed, by "channel number". */
  private readonly pending = new Map<string, Pending>();
  private readonly seen = new Map<string, Seen>();
  /** Confirmations to send, per sender channel and incarnation. */
  private readonly confirms = new Map<string, { channel: string; inc: string; ns: number[] }>();
  private flushing = false;

  /**
   * Writes what handling envelopes left to write to Redis (XMPP_SM_DURABLE:
   * a resumable session's queue), on the connection the confirmations go
   * on, so that Redis has it before a confirmation tells the sender to
   * forget the envelope.
   */
  private readonly beforeConfirm: (() => void) | undefined;

  constructor(cmd: Redis, node: string, worker: () => number, handle: (env: Envelope) => void, beforeConfirm?: () => void) {
    this.cmd = cmd;
    this.node = node;
    this.worker = worker;
    this.handle = handle;
    this.beforeConfirm = beforeConfirm;
  }

  /** Resolves true once the envelope was handled there, false once nobody listens on that channel. */
  send(node: string, worker: number, env: Envelope): Promise<boolean> {
    const channel = K.channel(node, worker);
    const n = (this.numbers.get(channel) ?? 0) + 1;
    this.numbers.set(channel, n);
    const msg = encodeBuffer({ t: 'env', node: this.node, worker: this.worker(), inc: this.inc, n, env } satisfies NodeMessage);
    return new Promise((resolve) => {
      const p: Pending = { channel, n, msg, resolve, since: Date.now(), wait: RETRY_FIRST_MS, timer: undefined };
      const key = `${channel} ${n}`;
      this.pending.set(key, p);
      this.publish(key, p);
    });
  }

  private publish(key: string, p: Pending): void {
    p.timer = setTimeout(() => this.again(key), p.wait);
    p.timer.unref();
    p.wait = Math.min(p.wait * 2, RETRY_MAX_MS);
    this.cmd.publish(p.channel, p.msg).then(
      (listeners) => {
        // Nobody subscribed: that worker or node is gone (its sessions with it).
        if (listeners === 0) this.gone(p.channel, p.n);
      },
      // Timed out (it may still run) or not sent: the timer publishes again.
      () => {},
    );
  }

  private again(key: string): void {
    const p = this.pending.get(key);
    if (!p) return;
    if (Date.now() - p.since > GIVE_UP_MS) {
      log.error('an envelope to another node was never confirmed; taken as not delivered', { channel: p.channel, waitedMs: Date.now() - p.since });
      return this.settle(key, false);
    }
    this.publish(key, p);
  }

  /**
   * Nobody listens on `channel` any more: envelope `n` and every earlier one
   * still unconfirmed there (an earlier publish may have counted the dead
   * node's lingering subscription, and would learn it only at its next try)
   * are not taken, earliest first, so that what their callers do instead
   * (offline storage, another resource) keeps the order they were sent in.
   */
  private gone(channel: string, n: number): void {
    const earlier = [...this.pending.values()].filter((p) => p.channel === channel && p.n <= n).sort((a, b) => a.n - b.n);
    for (const p of earlier) this.settle(`${channel} ${p.n}`, false);
  }

  private settle(key: string, taken: boolean): void {
    const p = this.pending.get(key);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(key);
    p.resolve(taken);
  }

  /** A message on this worker's channel. */
  receive(buf: Buffer): void {
    let m: NodeMessage;
    try {
      m = decode<NodeMessage>(buf);
    } catch (err) {
      log.warn('a message from another node could not be read', { err: String(err) });
      return;
    }
    if (m.t === 'ok') {
      // For an earlier incarnation of this worker (its numbers meant other envelopes): nothing of ours.
      if (m.inc !== this.inc) return;
      for (const n of m.ns) this.settle(`${m.to} ${n}`, true);
      return;
    }
    this.confirm(m.node, m.worker, m.inc, m.n);
    // A copy of one handled already (a publish that timed out ran after all): confirmed again, not handled again.
    if (!this.already(`${m.node} ${m.worker} ${m.inc}`, m.n)) this.handle(m.env);
  }

  /** Whether number n from that sender was handled; notes it if not. */
  private already(key: string, n: number): boolean {
    const now = Date.now();
    let s = this.seen.get(key);
    if (!s) {
      // A sender first heard of. After this receiver restarted, a sender
      // that knew its predecessor numbers on from where it was: those
      // numbers gather in \`ahead\` until MAX_AHEAD, then collapse (a bounded
      // cost), rather than a guess at where the numbering starts, which
      // would drop a first copy that comes late as if it were a second.
      s = { floor: 0, ahead: new Set(), at: now };
      this.seen.set(key, s);
      if (this.seen.size % 64 === 0) this.forgetIdle(now);
    }
    s.at = now;
    if (n <= s.floor || s.ahead.has(n)) return true;
    s.ahead.add(n);
    while (s.ahead.has(s.floor + 1)) s.ahead.delete(++s.floor);
    if (s.ahead.size > MAX_AHEAD) {
      // A gap that never filled (its sender gave up): taken as filled, or this would grow without bound.
      let min = Infinity;
      for (const x of s.ahead) if (x < min) min = x;
      s.floor = min;
      s.ahead.delete(min);
      while (s.ahead.has(s.floor + 1)) s.ahead.delete(++s.floor);
    }
    return false;
  }

  private forgetIdle(now: number): void {
    for (const [k, s] of this.seen) if (now - s.at > SENDER_IDLE_MS) this.seen.delete(k);
  }

  /** Confirms to the sender, batched: one message per sender per turn of the event loop. */
  private confirm(node: string, worker: number, inc: string, n: number): void {
    const channel = K.channel(node, worker);
    const key = `${channel} ${inc}`;
    const c = this.confirms.get(key);
    if (c) c.ns.push(n);
    else this.confirms.set(key, { channel, inc, ns: [n] });
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => {
      this.flushing = false;
      // A stanza a resumable session took is the sender's to forget only once
      // it is in the session's durable queue: were this node killed between
      // the confirmation and that write, neither would have it. Both go on
      // the same connection, and Redis runs them in the order written.
      this.beforeConfirm?.();
      const to = K.channel(this.node, this.worker());
      for (const c of this.confirms.values()) {
        // Lost or timed out: the sender publishes again, and is confirmed again.
        this.cmd.publish(c.channel, encodeBuffer({ t: 'ok', node: this.node, worker: this.worker(), inc: c.inc, to, ns: c.ns } satisfies NodeMessage)).catch(() => {});
      }
      this.confirms.clear();
    });
  }
}
