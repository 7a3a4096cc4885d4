// A load worker thread: it holds its share of the connections, runs its
// share of the workload and reports to the main thread (see cli.ts for the
// protocol's other side).
import { parentPort, workerData } from 'node:worker_threads';
import { Conn, now, wallNow, escapeAttr } from './client.ts';
import type { ConnHandler, ResumeState, Target } from './client.ts';
import { attr, childText, errorCondition, startTag } from './tokenizer.ts';
import { Recorder, STATS_INTERVAL_MS } from './stats.ts';
import { shareOf, webUrl } from './options.ts';
import { Receipts, instantRoom, joinPresence, lostDeliveries, mucBody, parseMucBody, roomCreated } from './muc.ts';
import type { FromWorker, LoadOptions, ToWorker } from './options.ts';

const o = (workerData as { opts: LoadOptions; index: number }).opts;
const w = (workerData as { index: number }).index;
const W = o.workers;
const port = parentPort!;
const rec = new Recorder();
const target: Target = { host: o.host, port: o.port, domain: o.domain, tls: o.tls, mechanism: o.mechanism, timeoutMs: o.timeoutS * 1000, transport: o.transport, url: webUrl(o) };
/** chat --remote-domain: the server of the receiving side (federation, the messages cross between servers). */
const remoteTarget: Target | undefined = o.remote ? { ...target, ...o.remote } : undefined;
const TICK_MS = 5;

/** Posts a message; a phase message goes after the figures up to now, so the main thread sees both in order. */
function post(m: FromWorker): void {
  if (m.t !== 'stats' && m.t !== 'final' && m.t !== 'provisioned') flush();
  port.postMessage(m);
}

/** Every live connection of this worker. */
const live = new Set<Conn>();

const statsTimer = setInterval(() => flush(), STATS_INTERVAL_MS);
function flush(): void {
  rec.inflight = live.size;
  port.postMessage({ t: 'stats', d: rec.take() } satisfies FromWorker);
}

const userName = (i: number) => `${o.userPrefix}${i}`;
/** "%i" in --password stands for the user's number (as in Tsung's generated accounts). */
const passwordOf = (i: number) => o.password.replaceAll('%i', String(i));
/** The users (1-based) this worker owns: i ≡ w + 1 (mod W). */
function localUsers(n: number): number[] {
  const out: number[] = [];
  for (let i = w + 1; i <= n; i += W) out.push(i);
  return out;
}

/** A new connection for user number `user` (0: none, for registration or ANONYMOUS). */
function open(user: number, resource: string, handler: ConnHandler, registerOnly = false, resumeFrom?: ResumeState, remote = false): Conn {
  const resume = o.resume && !registerOnly;
  const to = remote && remoteTarget ? remoteTarget : resumeFrom && o.resumePort !== undefined ? { ...target, port: o.resumePort } : target;
  const c = new Conn(to, { user: user ? userName(user) : '', password: user ? passwordOf(user) : '', resource, presence: true, registerOnly, sm: o.sm && !registerOnly, resume, resumeFrom }, handler);
  live.add(c);
  return c;
}

/** Answers an iq request from the server (a ping, or anything else with an error). */
function answerIq(c: Conn, raw: string): void {
  const tag = startTag(raw);
  const type = attr(tag, 'type');
  if (type !== 'get' && type !== 'set') return;
  const id = attr(tag, 'id') ?? '';
  const from = attr(tag, 'from');
  const to = from ? ` to='${from}'` : '';
  // Through sendStanzas: with resumption, every stanza sent is counted (XEP-0198 §4).
  if (raw.includes('urn:xmpp:ping')) c.sendStanzas([`<iq type='result' id='${id}'${to}/>`]);
  else c.sendStanzas([`<iq type='error' id='${id}'${to}><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`]);
}

// ---- provisioning (XEP-0077), before the workload ----

function provision(): Promise<void> {
  const queue = localUsers(o.users);
  const result = { created: 0, existed: 0, failed: 0, errors: {} as Record<string, number> };
  const failed = (kind: string) => {
    result.failed++;
    result.errors[kind] = (result.errors[kind] ?? 0) + 1;
  };
  const pool = Math.min(8, queue.length);
  return new Promise<void>((resolve) => {
    let running = 0;
    const finish = () => {
      post({ t: 'provisioned', ...result });
      resolve();
    };
    if (pool === 0) return finish();
    const startOne = () => {
      running++;
      let current = 0;
      let seq = 0;
      let wasReady = false;
      const next = (c: Conn) => {
        wasReady = true;
        current = queue.shift() ?? 0;
        if (current === 0) return c.close();
        c.write(`<iq type='set' id='reg${++seq}'><query xmlns='jabber:iq:register'><username>${escapeAttr(userName(current))}</username><password>${escapeAttr(passwordOf(current))}</password></query></iq>`);
      };
      open(0, '', {
        ready: next,
        stanza(c, name, raw) {
          if (name !== 'iq' || current === 0) return;
          const tag = startTag(raw);
          if (attr(tag, 'id') !== `reg${seq}`) return;
          const type = attr(tag, 'type');
          if (type === 'result') {
            result.created++;
            // One account per stream (as a client registers, then logs in; this server refuses a second): the next on a new one.
            current = 0;
            return c.close();
          } else {
            const cond = errorCondition(raw, 'error');
            if (cond === 'conflict') result.existed++;
            else failed(`register:${cond}`);
          }
          next(c);
        },
        end(c, error) {
          live.delete(c);
          running--;
          if (error) {
            // The user being registered fails with the connection; a connection
            // that never got ready uses one up too, so that this ends.
            if (current !== 0) failed(`register:${error}`);
            else if (!wasReady && queue.length > 0) {
              failed(`register:${error}`);
              queue.shift();
            }
          }
          if (queue.length > 0) startOne();
          else if (running === 0) finish();
        },
      }, true);
    };
    for (let i = 0; i < pool; i++) startOne();
  });
}

// ---- workloads ----

interface Item {
  /** User number. */
  user: number;
  resource: string;
  tag: number;
  /** On the remote server (chat --remote-domain). */
  remote?: boolean;
}

/**
 * Connects the given users, at most `limit` negotiating at once, and calls
 * `done` once each is bound or has failed. Connect-to-bound latencies go to
 * the histogram when `record` is set.
 */
function connectAll(items: Item[], limit: number, record: boolean, stanza: ConnHandler['stanza'], lost: (c: Conn, error: string | undefined) => void, done: (ok: Conn[]) => void): void {
  const ok: Conn[] = [];
  let next = 0;
  let negotiating = 0;
  let pending = items.length;
  if (pending === 0) {
    done(ok);
    return;
  }
  const settle = () => {
    negotiating--;
    if (--pending === 0) done(ok);
    else launch();
  };
  const h: ConnHandler = {
    ready(c) {
      if (record) rec.latency(c.boundAt - c.startedAt);
      ok.push(c);
      settle();
    },
    stanza,
    end(c, error) {
      live.delete(c);
      if (c.boundAt === 0) {
        rec.error(error ?? 'closed');
        settle();
        ended();
      } else lost(c, error);
    },
  };
  const launch = () => {
    while (next < items.length && negotiating < limit && !closing) {
      const it = items[next++];
      negotiating++;
      const c = open(it.user, it.resource, h, false, undefined, it.remote);
      c.tag = it.tag;
      c.user = it.user;
    }
  };
  launch();
}

let onMessage: (m: ToWorker) => void = () => {};
/** Closes every live connection politely, then reports the last figures. */
function closeAll(): void {
  if (live.size === 0) return final();
  for (const c of [...live]) c.close(); // a connection not bound yet fails as 'unfinished'
}
let finalSent = false;
function final(): void {
  if (finalSent) return;
  finalSent = true;
  clearInterval(statsTimer);
  rec.inflight = 0;
  post({ t: 'final', d: rec.take() });
  port.close();
}
/** Called whenever a connection ends; when closing, the last one triggers the final report. */
let closing = false;
function ended(): void {
  if (closing && live.size === 0) final();
}

function login(): void {
  const share = shareOf(o.count, w, W);
  const rate = o.rate / W;
  const ramp = o.rampS;
  // Arrivals expected by `t` seconds: a linear ramp from 0 to `rate` over `ramp` s, then flat.
  const arrivals = (t: number) => (ramp > 0 && t < ramp ? (rate * t * t) / (2 * ramp) : ramp > 0 ? (rate * ramp) / 2 + rate * (t - ramp) : rate * t);
  let launched = 0;
  let stopped = false;
  let reportedDone = false;
  const t0 = now();
  const checkDone = () => {
    if (live.size > 0) return;
    if (stopped) post({ t: 'idle' });
    else if (launched >= share && !reportedDone) {
      reportedDone = true;
      post({ t: 'done' });
    }
  };
  const handler: ConnHandler = {
    ready(c) {
      rec.latency(c.boundAt - c.startedAt);
      c.close();
    },
    stanza(c, name, raw) {
      if (name === 'iq') answerIq(c, raw);
    },
    end(c, error) {
      live.delete(c);
      if (error) rec.error(error);
      else rec.completed++;
      ended();
      checkDone();
    },
  };
  const tick = () => {
    const due = Math.min(share, Math.floor(arrivals((now() - t0) / 1000)) + 1);
    while (launched < due) {
      const g = launched * W + w; // this arrival's number across all workers
      launched++;
      if (live.size >= o.concurrency) {
        rec.error('skipped:concurrency-limit');
        continue;
      }
      open((g % o.users) + 1, '', handler);
    }
    if (launched >= share) {
      clearInterval(ticker);
      checkDone();
    }
  };
  const ticker = setInterval(tick, TICK_MS);
  tick();
  onMessage = (m) => {
    if (m.t === 'stop') {
      stopped = true;
      clearInterval(ticker);
      checkDone();
    }
  };
}

/**
 * chat: users sending messages to each other. flap: the same, with stream
 * management and resumption on, and once, every connection dropped at once
 * and the session resumed on a new one (--resume-port: elsewhere); every
 * message carries an id, so that one received twice is counted.
 */
function chat(flap: boolean): void {
  const mine = localUsers(o.users);
  /** flap: ids of the messages received, to count duplicates. */
  const seen = new Set<string>();
  /** flap: the connections were cut and are resuming (nobody online is not the end). */
  let resuming = false;
  const online: Conn[] = [];
  let peers: string[] = [];
  let sending = false;
  const share = shareOf(o.count, w, W);
  let sent = 0;
  let seq = 0;
  let ticker: NodeJS.Timeout | undefined;
  // With --remote-domain, each user is online on both servers: it sends
  // from ours and receives on the remote one, so every message crosses.
  const jidOf = (i: number) => `${userName(i)}@${o.remote?.domain ?? o.domain}/load`;
  const stanza = (c: Conn, name: string, raw: string) => {
    if (name === 'message') {
      const tag = startTag(raw);
      if (attr(tag, 'type') === 'error') {
        rec.error(`message-error:${errorCondition(raw, 'error')}`);
        return;
      }
      const body = childText(raw, 'body');
      if (body === undefined || !body.startsWith('lt ')) return;
      if (flap) {
        const id = attr(tag, 'id') ?? '';
        if (seen.has(id)) return rec.error('duplicate');
        seen.add(id);
      }
      rec.latency(wallNow() - Number(body.slice(3)));
      rec.delivered++;
      rec.completed++;
    } else if (name === 'iq') answerIq(c, raw);
  };
  const lost = (c: Conn, error: string | undefined) => {
    const i = online.indexOf(c);
    if (i !== -1) {
      online[i] = online[online.length - 1];
      online.pop();
    }
    if (error) rec.error(error);
    ended();
  };
  onMessage = (m) => {
    if (m.t === 'go') {
      const items: Item[] = mine.map((i) => ({ user: i, resource: 'load', tag: i }));
      if (o.remote) items.push(...mine.map((i) => ({ user: i, resource: 'load', tag: i, remote: true })));
      connectAll(items, o.concurrency, false, stanza, lost, (ok) => {
        // Senders are the connections to our server; peers, those that receive.
        const receiving = o.remote ? ok.filter((c) => c.target === remoteTarget) : ok;
        online.push(...(o.remote ? ok.filter((c) => c.target !== remoteTarget) : ok));
        post({ t: 'ready', online: receiving.map((c) => c.tag) });
      });
    } else if (m.t === 'send') {
      peers = m.peers.map(jidOf);
      if (online.length === 0 || share <= 0) {
        post({ t: 'done' });
        return;
      }
      sending = true;
      const t0 = now();
      const perSecond = o.rate * online.length;
      const batch = new Map<Conn, string[]>();
      const tick = () => {
        if (!sending) return;
        const due = Math.min(share, Math.floor((perSecond * (now() - t0)) / 1000) + 1);
        if (online.length > 0 && (peers.length > 1 || (o.remote && peers.length > 0))) {
          // One timestamp per tick: the messages of a tick leave together.
          const body = `<body>lt ${wallNow().toFixed(3)}</body></message>`;
          const before = sent;
          while (sent < due) {
            const from = online[(Math.random() * online.length) | 0];
            let to = peers[(Math.random() * peers.length) | 0];
            while (to === from.jid) to = peers[(Math.random() * peers.length) | 0];
            const msg = `<message type='chat' to='${to}' id='w${w}m${++seq}'>${body}`;
            const list = batch.get(from);
            if (list) list.push(msg);
            else batch.set(from, [msg]);
            sent++;
          }
          for (const [c, list] of batch) c.sendStanzas(list);
          batch.clear();
          rec.sent += sent - before;
        } else if (online.length === 0 && !resuming) sent = share; // nobody left to send
        if (sent >= share) {
          sending = false;
          clearInterval(ticker);
          post({ t: 'done' });
        }
      };
      ticker = setInterval(tick, TICK_MS);
      tick();
    } else if (m.t === 'flap') {
      // Every connection drops at once, as on a network failure, and resumes at once.
      const states = online.map((c) => ({ c, state: c.resumeState() }));
      online.length = 0;
      for (const { c } of states) {
        live.delete(c);
        c.drop();
      }
      const t0 = wallNow();
      const start = now();
      let pending = states.length;
      let last = t0;
      let failed = 0;
      resuming = true;
      const settle = () => {
        if (--pending > 0) return;
        resuming = false;
        post({ t: 'resumed', first: t0, last, ok: states.length - failed, failed });
      };
      if (pending === 0) return post({ t: 'resumed', first: t0, last, ok: 0, failed: 0 });
      const handler: ConnHandler = {
        ready(c) {
          last = Math.max(last, t0 + (c.boundAt - start));
          online.push(c);
          settle();
        },
        stanza,
        end(c, error) {
          live.delete(c);
          if (c.boundAt === 0) {
            failed++;
            rec.error(error ?? 'closed');
            settle();
            ended();
          } else lost(c, error);
        },
      };
      for (const { c, state } of states) {
        if (!state) {
          failed++;
          rec.error('sm:no-resumption');
          settle();
          continue;
        }
        const n = open(c.user, c.opts.resource, handler, false, state);
        n.tag = c.tag;
        n.user = c.user;
      }
    } else if (m.t === 'stop') {
      sending = false;
      clearInterval(ticker);
      post({ t: 'stopped' });
    }
  };
}

function idleOrStorm(storm: boolean): void {
  const share = shareOf(Math.min(o.connections, o.count), w, W);
  const items: Item[] = [];
  for (let k = 0; k < share; k++) {
    const g = k * W + w;
    items.push({ user: (g % o.users) + 1, resource: `c${g}`, tag: g });
  }
  let conns: Conn[] = [];
  let keepalive: NodeJS.Timeout | undefined;
  const stanza = (c: Conn, name: string, raw: string) => {
    if (name === 'iq') answerIq(c, raw);
  };
  const lost = (_c: Conn, error: string | undefined) => {
    if (error) rec.error(error);
    ended();
  };
  onMessage = (m) => {
    if (m.t === 'go') {
      connectAll(items, o.concurrency, !storm, stanza, lost, (ok) => {
        conns = ok;
        if (!storm) rec.completed += ok.length;
        post({ t: 'ready', online: [] });
        // Whitespace keepalives, so that a long idle run outlives the server's idle timeout.
        keepalive = setInterval(() => {
          for (const c of conns) c.keepalive();
        }, 60_000);
        keepalive.unref();
      });
    } else if (m.t === 'storm') {
      // Everyone drops at once (as on a network failure) and reconnects at once.
      const again: Item[] = conns.map((c) => ({ user: c.user, resource: c.opts.resource, tag: c.tag }));
      for (const c of conns) {
        live.delete(c);
        c.drop();
      }
      conns = [];
      // Reconnection latency: from the drop to bound again.
      const t0 = wallNow();
      const start = now();
      connectAll(again, Infinity, true, stanza, lost, (ok) => {
        conns = ok;
        let last = t0;
        for (const c of ok) last = Math.max(last, t0 + (c.boundAt - start));
        rec.completed += ok.length;
        post({ t: 'rebound', first: t0, last, ok: ok.length });
      });
    }
    if (m.t === 'close') clearInterval(keepalive);
  };
}

/**
 * muc: --rooms rooms (XEP-0045) of --occupants occupants each. A room lives
 * on one worker with all its occupants (room r on worker r mod W), so that
 * the worker knows what each occupant should receive. The first occupant
 * creates the room as an instant room, the others enter once it is open;
 * then each room gets --rate groupchat messages per second, sent by its
 * occupants in turn, each carrying the room's sequence number and its send
 * time. Every occupant records each message once (latency: sent to
 * received); one received twice is a duplicate, one never received, lost.
 */
function muc(): void {
  interface Room {
    jid: string;
    occupants: Occupant[];
    /** Entered by its creator, and configured when it was new: the others may enter. */
    open: boolean;
    /** Messages to send (of --count), sent so far, and bounced (errors from the room). */
    share: number;
    sent: number;
    bounced: number;
    /** When in each 1/rate interval the room sends (0..1): the rooms' messages are spread, not sent in bursts. */
    phase: number;
    /** The next sender, in turn. */
    turn: number;
    /** The occupant that creates the room (or enters first, when it exists). */
    creator: Occupant | undefined;
    /** Occupants that got in (known once every one has settled). */
    joined: number;
  }
  interface Occupant {
    room: Room;
    nick: string;
    /** Its occupant JID, room@service/nick. */
    full: string;
    conn: Conn | undefined;
    joined: boolean;
    /** Joined, or failed to: no longer waited for. */
    settled: boolean;
    /** Still connected and in the room (it may send). */
    present: boolean;
    got: Receipts;
    /** The occupants whose presence it received (by number), and whether that is all who got in. */
    seen: Receipts;
    synced: boolean;
  }
  const rooms: Room[] = [];
  const everyone: Occupant[] = [];
  for (let r = w; r < o.rooms; r += W) {
    const room: Room = { jid: `${o.roomPrefix}${r + 1}@${o.mucDomain}`, occupants: [], open: false, share: shareOf(o.count, r, o.rooms), sent: 0, bounced: 0, phase: r / o.rooms, turn: 0, creator: undefined, joined: 0 };
    for (let k = 0; k < o.occupants; k++) {
      const nick = `o${k + 1}`;
      const occ: Occupant = { room, nick, full: `${room.jid}/${nick}`, conn: undefined, joined: false, settled: false, present: false, got: new Receipts(), seen: new Receipts(), synced: false };
      room.occupants.push(occ);
      everyone.push(occ);
    }
    rooms.push(room);
  }
  const CONFIG_ID = 'muc-config';
  /** How long, once all have entered, the last presence broadcasts may take before sending starts anyway. */
  const SYNC_MS = 10_000;
  let unsettled = everyone.length;
  /** Occupants in, that have not yet seen every other one in. */
  let unsynced = 0;
  let syncTimer: NodeJS.Timeout | undefined;
  let readyPosted = false;
  /** Messages are counted from the first sent until the figures are final. */
  let counting = false;
  let sending = false;
  let ticker: NodeJS.Timeout | undefined;
  let drainTimer: NodeJS.Timeout | undefined;

  /**
   * Ready once every occupant has settled, and each one in has received the
   * presence of every other one in (§7.2.3): the rooms' presence broadcasts
   * are over, and do not weigh on the first messages' latency.
   */
  const postReady = () => {
    if (readyPosted) return;
    readyPosted = true;
    clearTimeout(syncTimer);
    rec.error('muc-join:presences-missing', false, unsynced);
    post({ t: 'ready', online: [], joined: everyone.filter((x) => x.joined).length });
  };
  const checkReady = () => {
    if (readyPosted || unsettled > 0) return;
    if (!syncTimer) {
      for (const room of rooms) room.joined = room.occupants.filter((x) => x.joined).length;
      for (const occ of everyone) sync(occ);
      unsynced = everyone.filter((x) => x.joined && !x.synced).length;
      syncTimer = setTimeout(postReady, SYNC_MS);
    }
    if (unsynced === 0) postReady();
  };
  const sync = (occ: Occupant) => {
    if (unsettled > 0 || !occ.joined || occ.synced || occ.seen.received < occ.room.joined) return;
    occ.synced = true;
    if (syncTimer) unsynced--;
  };
  const settle = (occ: Occupant, joined: boolean, error?: string) => {
    if (occ.settled) return;
    occ.settled = true;
    occ.joined = joined;
    occ.present = joined;
    if (error) rec.error(error);
    unsettled--;
    checkReady();
  };
  const enter = (occ: Occupant) => occ.conn!.sendStanzas([joinPresence(occ.room.jid, occ.nick)]);
  const openRoom = (room: Room) => {
    room.open = true;
    for (const occ of room.occupants) if (!occ.settled && occ.conn) enter(occ);
  };
  /** The room was refused to its creator: nobody else enters. */
  const abandon = (room: Room) => {
    for (const occ of room.occupants) settle(occ, false, 'muc-join:room-not-created');
  };
  /** The first of its occupants still connected creates the room (or enters it, when it exists). */
  const createRoom = (room: Room) => {
    room.creator = room.occupants.find((x) => !x.settled && x.conn);
    if (room.creator) enter(room.creator);
  };

  const stanza = (c: Conn, name: string, raw: string) => {
    const occ = everyone[c.tag];
    if (name === 'message') {
      const tag = startTag(raw);
      const type = attr(tag, 'type');
      if (type === 'error') {
        occ.room.bounced++;
        rec.error(`message-error:${errorCondition(raw, 'error')}`);
        return;
      }
      if (type !== 'groupchat' || !counting) return;
      const body = childText(raw, 'body');
      if (body === undefined) return; // the subject
      const m = parseMucBody(body);
      // History (delayed) is not this run's; a number not sent yet is not ours either.
      if (!m || m.seq > occ.room.sent || raw.includes('urn:xmpp:delay') || !attr(tag, 'from')?.startsWith(`${occ.room.jid}/`)) return;
      if (!occ.got.mark(m.seq)) return rec.error('duplicate');
      rec.latency(wallNow() - m.sentAt);
      rec.delivered++;
      rec.completed++;
    } else if (name === 'presence') {
      const tag = startTag(raw);
      const from = attr(tag, 'from') ?? '';
      const type = attr(tag, 'type');
      const prefix = `${occ.room.jid}/o`;
      if (type === undefined && from.startsWith(prefix)) {
        // An occupant in the room (its own presence too), by its number.
        const k = Number(from.slice(prefix.length));
        if (Number.isInteger(k) && k >= 1 && k <= o.occupants) {
          occ.seen.mark(k);
          if (syncTimer && !occ.synced) {
            sync(occ);
            checkReady();
          }
        }
      }
      if (from !== occ.full) return; // another occupant
      if (!occ.settled) {
        if (type === 'error') {
          settle(occ, false, `muc-join:${errorCondition(raw, 'error')}`);
          if (!occ.room.open) abandon(occ.room);
        } else if (type === undefined) {
          if (occ.room.open) settle(occ, true);
          // The creator: a new room is locked until its owner configures it.
          else if (roomCreated(raw)) c.sendStanzas([instantRoom(occ.room.jid, CONFIG_ID)]);
          else {
            settle(occ, true);
            openRoom(occ.room);
          }
        }
      } else if (type === 'unavailable' && occ.present) {
        occ.present = false;
        rec.error('muc:removed');
      }
    } else if (name === 'iq') {
      const tag = startTag(raw);
      if (attr(tag, 'id') === CONFIG_ID && attr(tag, 'from') === occ.room.jid) {
        if (attr(tag, 'type') === 'result') {
          settle(occ, true);
          openRoom(occ.room);
        } else {
          settle(occ, false, `muc-config:${errorCondition(raw, 'error')}`);
          abandon(occ.room);
        }
      } else answerIq(c, raw);
    }
  };
  const lost = (c: Conn, error: string | undefined) => {
    const occ = everyone[c.tag];
    occ.present = false;
    occ.conn = undefined;
    if (!occ.settled) {
      settle(occ, false, error ?? 'closed');
      // The creator went before the room was open: the next occupant creates it.
      if (!occ.room.open && occ.room.creator === occ) createRoom(occ.room);
    } else if (error) rec.error(error);
    ended();
  };

  /** Deliveries still awaited: each occupant that joined should get every message its room accepted. */
  const awaited = () => {
    let n = 0;
    for (const room of rooms) {
      const accepted = room.sent - room.bounced;
      for (const occ of room.occupants) if (occ.joined) n += Math.max(0, accepted - occ.got.received);
    }
    return n;
  };
  const expected = () => rooms.reduce((n, room) => n + room.sent * room.occupants.filter((x) => x.joined).length, 0);

  onMessage = (m) => {
    if (m.t === 'go') {
      const items: Item[] = everyone.map((occ, i) => {
        const g = rooms.indexOf(occ.room) * W + w; // the room's number, from 0
        const k = occ.room.occupants.indexOf(occ);
        return { user: ((g * o.occupants + k) % o.users) + 1, resource: `muc${g + 1}-${k + 1}`, tag: i };
      });
      connectAll(items, o.concurrency, false, stanza, lost, (ok) => {
        for (const c of ok) everyone[c.tag].conn = c;
        for (const occ of everyone) if (!occ.conn) settle(occ, false); // its connection's error is counted
        for (const room of rooms) createRoom(room);
        checkReady();
      });
    } else if (m.t === 'send') {
      counting = true;
      sending = true;
      const t0 = now();
      const batch = new Map<Conn, string[]>();
      const tick = () => {
        if (!sending) return;
        const intervals = (o.rate * (now() - t0)) / 1000;
        const sentAt = wallNow().toFixed(3);
        let left = 0;
        for (const room of rooms) {
          if (!room.open) continue;
          const due = Math.min(room.share, Math.floor(intervals + 1 - room.phase));
          const before = room.sent;
          while (room.sent < due) {
            // The next occupant still present sends: XEP-0045 §7.4.
            let sender: Occupant | undefined;
            for (let i = 0; i < room.occupants.length && !sender; i++) {
              const x = room.occupants[room.turn++ % room.occupants.length];
              if (x.present) sender = x;
            }
            if (!sender) {
              room.share = room.sent; // nobody left to send
              break;
            }
            const seq = ++room.sent;
            const msg = `<message type='groupchat' to='${room.jid}' id='m${seq}'><body>${mucBody(seq, sentAt)}</body></message>`;
            const c = sender.conn!;
            const list = batch.get(c);
            if (list) list.push(msg);
            else batch.set(c, [msg]);
          }
          rec.sent += room.sent - before;
          if (room.sent < room.share) left++;
        }
        for (const [c, list] of batch) c.sendStanzas(list);
        batch.clear();
        if (left === 0) {
          sending = false;
          clearInterval(ticker);
          post({ t: 'done' });
        }
      };
      ticker = setInterval(tick, TICK_MS);
      tick();
    } else if (m.t === 'stop') {
      sending = false;
      clearInterval(ticker);
      // What was sent gets up to --drain seconds to arrive.
      const until = now() + o.drainS * 1000;
      const check = () => {
        if (awaited() > 0 && now() < until) return;
        clearInterval(drainTimer);
        post({ t: 'stopped', expected: expected() });
      };
      drainTimer = setInterval(check, 10);
      check();
    } else if (m.t === 'close') {
      clearInterval(ticker);
      clearInterval(drainTimer);
      clearTimeout(syncTimer);
      readyPosted = true;
      // The figures are final before the connections close (leaving rooms is no loss).
      counting = false;
      for (const room of rooms) rec.error('lost', true, lostDeliveries(room.sent, room.bounced, room.occupants.filter((x) => x.joined).map((x) => x.got)));
    }
  };
}

port.on('message', (m: ToWorker) => {
  if (m.t === 'close') {
    closing = true;
    onMessage(m);
    closeAll();
    return;
  }
  onMessage(m);
});

async function main(): Promise<void> {
  if (o.provision && o.mechanism !== 'ANONYMOUS') await provision();
  else post({ t: 'provisioned', created: 0, existed: 0, failed: 0, errors: {} });
  if (o.workload === 'login') {
    onMessage = (m) => {
      if (m.t === 'go') login();
    };
  } else if (o.workload === 'chat' || o.workload === 'flap') chat(o.workload === 'flap');
  else if (o.workload === 'muc') muc();
  else idleOrStorm(o.workload === 'storm');
}

void main();
