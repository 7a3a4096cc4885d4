// Administration across a cluster: a question to every node's main thread
// (its sessions, its counts), over Redis pub/sub. The asking node publishes
// the question on one channel every node listens to; each answers on the
// asker's own channel. PUBLISH says how many subscribers Redis gave the
// question to (one per live node): the asker waits for that many answers,
// within a bound, and says which nodes answered and how many did not.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { K } from '../registry/redis.ts';
import { encodeBuffer, decode } from '../worker/wire.ts';
import { ready } from '../cluster/redis.ts';
import { log } from '../log.ts';

/** What one node is asked. */
export type NodeQuestion = { op: 'sessions'; user?: string } | { op: 'stats' };

/** One node's answer: its value, or why it has none. */
export interface NodeAnswer {
  node: string;
  v?: unknown;
  err?: string;
}

interface Question {
  id: string;
  from: string;
  q: NodeQuestion;
}

export class ClusterAdmin {
  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly node: string;
  private readonly local: (q: NodeQuestion) => Promise<unknown>;
  /** This process's questions: unique across restarts under the same node name. */
  private readonly prefix = randomBytes(6).toString('base64url');
  private seq = 0;
  private readonly waiting = new Map<string, { answers: NodeAnswer[]; of: number; done: () => void }>();

  /** `cmd` publishes (any command connection); `sub` is this object's own, for subscribing; `local` answers for this node. */
  constructor(cmd: Redis, sub: Redis, node: string, local: (q: NodeQuestion) => Promise<unknown>) {
    this.cmd = cmd;
    this.sub = sub;
    this.node = node;
    this.local = local;
  }

  async start(): Promise<void> {
    const mine = K.adminReply(this.node);
    this.sub.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      const name = channel.toString();
      try {
        if (name === K.admin) this.answer(decode<Question>(message));
        else if (name === mine) this.answered(decode<NodeAnswer & { id: string }>(message));
      } catch (err) {
        log.warn('administration message not understood', { channel: name, err: String(err) });
      }
    });
    // The connection queues nothing while it connects: subscribed once it is up (and again after an outage, by ioredis).
    await ready(this.sub);
    await this.sub.subscribe(K.admin, mine);
  }

  private answer(m: Question): void {
    const reply = (a: NodeAnswer) => this.cmd.publish(K.adminReply(m.from), encodeBuffer({ id: m.id, ...a })).catch((err: unknown) => log.warn('administration answer not sent', { to: m.from, err: String(err) }));
    this.local(m.q).then(
      (v) => reply({ node: this.node, v: v ?? null }),
      (err: unknown) => reply({ node: this.node, err: (err as Error).message ?? String(err) }),
    );
  }

  private answered(a: NodeAnswer & { id: string }): void {
    const w = this.waiting.get(a.id);
    if (!w) return; // too late
    w.answers.push({ node: a.node, ...(a.err !== undefined ? { err: a.err } : { v: a.v }) });
    if (w.of >= 0 && w.answers.length >= w.of) w.done();
  }

  /** Asks every node (this one included); `missing`: how many nodes got the question and did not answer within `timeoutMs`. */
  async ask(q: NodeQuestion, timeoutMs: number): Promise<{ answers: NodeAnswer[]; missing: number }> {
    const id = `${this.prefix}:${++this.seq}`;
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const w = { answers: [] as NodeAnswer[], of: -1, done };
    this.waiting.set(id, w);
    let timer: NodeJS.Timeout | undefined;
    try {
      w.of = await this.cmd.publish(K.admin, encodeBuffer({ id, from: this.node, q } satisfies Question));
      if (w.answers.length >= w.of) done();
      await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
      const answers = [...w.answers].sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
      return { answers, missing: Math.max(0, w.of - answers.length) };
    } finally {
      clearTimeout(timer);
      this.waiting.delete(id);
    }
  }

  close(): void {
    this.sub.disconnect();
  }
}
