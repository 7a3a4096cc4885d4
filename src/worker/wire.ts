// Messages that cross a thread (and, in a cluster, a node) are msgpackr
// encoded. Records are off so that any peer can decode without shared state.
import { Packr } from 'msgpackr';
import type { MessagePort } from 'node:worker_threads';
import type { BindOutcome, BindRequest, SessionRecord } from '../registry/registry.ts';
import type { StreamCondition } from '../xmpp/errors.ts';
import type { Departed } from '../presence/presence.ts';
import type { Handoff, Reroute } from '../session/session.ts';
import type { RemovalNotice } from '../accounts/removal.ts';
import type { HttpPorts } from '../web/http.ts';
import type { BoshEnvelope } from '../web/bosh.ts';
import type { Config } from '../config/index.ts';
import type { TlsIdentity } from '../tls/certificate.ts';
import type { AdminTask } from '../admin/tasks.ts';

const packr = new Packr({ useRecords: false, moreTypes: false });

/**
 * An exact-size copy: pack() returns a view into packr's working buffer (8 KiB
 * and up), and postMessage clones a view's whole buffer, so each message
 * between threads would allocate and copy that much instead of its own bytes.
 */
export const encode = (msg: unknown): Uint8Array => new Uint8Array(packr.pack(msg));
export const decode = <T>(buf: Uint8Array): T => packr.unpack(buf) as T;
/** encode() as a Buffer (what ioredis publishes): a view over that copy, not another copy. */
export const encodeBuffer = (msg: unknown): Buffer => {
  const bytes = encode(msg);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
};

/** Worker → main thread (the node's hub). */
export type ToHub =
  | { t: 'bind'; q: number; req: BindRequest }
  | { t: 'unbind'; jid: string; sid: string }
  | { t: 'presence'; q: number; jid: string; sid: string; available: boolean; priority: number }
  // a session resumed on another worker: its record follows it; answered with 'moved'
  | { t: 'move'; q: number; jid: string; sid: string; worker: number }
  // answered with an ack once every change the hub applied before has been sent to this worker
  | { t: 'sync'; q: number }
  | { t: 'hello'; threadId: number }
  // an account was removed: to every worker
  | { t: 'removed'; notice: RemovalNotice }
  | { t: 'ready' }
  // the upkeep the hub asked for is done: what it removed (a part that is off, or failed, absent)
  | { t: 'upkept'; removed: { archive?: number; uploads?: number } }
  // PEP state the node's workers share (pep/remote.ts PepShared): a call by name, answered with 'pep'
  | { t: 'pep'; q: number; m: string; a: unknown[] }
  // the answer to 'collect': this worker's metrics (prom-client's getMetricsAsJSON)
  | { t: 'collected'; q: number; m: unknown }
  // an HTTP client of this worker asked for /metrics: the node's, answered with 'metrics'
  | { t: 'metrics'; q: number }
  // the node's record of failed authentications and registrations (acceptor/guard.ts): a call by name, answered with 'guard' unless q is 0
  | { t: 'guard'; q: number; m: string; a: unknown[] }
  // shutdown: this worker's sessions are closed (the hub then says 'close-s2s' to all), and then everything
  | { t: 'drained' }
  | { t: 'stopped' }
  // the outcome of an 'admin' task: its value, or why it failed
  | { t: 'admin'; q: number; v?: unknown; err?: string };

/** A direct link to another worker of the node, by its index. */
export interface PeerPort {
  index: number;
  port: MessagePort;
}

/**
 * Main thread → worker, once, when the worker joins the hub (at start, or
 * as the replacement of one that died): everything it needs to serve, in
 * one message. Structured-cloned rather than encoded, since it carries
 * ports. `records`: the node's registry as it stands (single node), which
 * the 'put' and 'del' messages that follow keep current. `state`: the last
 * of each cluster-state message ('epoch', 'judging') sent so far.
 */
export interface Welcome {
  t: 'welcome';
  index: number;
  records: SessionRecord[];
  state: FromHub[];
  peers: PeerPort[];
}

/** Main thread → worker, structured-cloned: a worker that joined after this one. */
export interface Peers {
  t: 'peers';
  peers: PeerPort[];
}

/** Main thread → worker, structured-cloned: a port to a storage thread started again (the old one died). */
export interface StorePort {
  t: 'store';
  port: MessagePort;
}

/** Main thread → worker. */
export type FromHub =
  | { t: 'bound'; q: number; outcome: BindOutcome }
  // a presence change was applied and sent to every worker
  | { t: 'ack'; q: number }
  | { t: 'moved'; q: number; ok: boolean }
  | { t: 'put'; rec: SessionRecord }
  | { t: 'del'; jid: string; sid: string }
  | { t: 'shutdown' }
  // shutdown: every worker's sessions are closed; the streams to peer servers may close now
  | { t: 'close-s2s' }
  // cluster mode: the node's fencing token changed / the node was fenced /
  // Redis lost its data and local sessions must be registered again /
  // Redis came back with its data and local records must be reconciled
  | { t: 'epoch'; epoch: string }
  | { t: 'fenced' }
  | { t: 'reset' }
  | { t: 'reconcile' }
  // cluster mode: whether this node may take other nodes' lapsed leases for deaths
  | { t: 'judging'; on: boolean }
  // cluster mode: this node's lease holds until then at least (this process's
  // clock, ms; measured from before the heartbeat that renewed it was sent)
  | { t: 'lease'; until: number }
  // cluster mode: a node was judged dead (or this one started under a new
  // epoch): claims on it are void; `scan`: this worker looks for its rooms
  | { t: 'node-dead'; node: string; scan: boolean }
  // sessions of a dead node (cluster mode) or of a worker of this node that
  // died, whose unavailable presence this worker announces
  | { t: 'departed'; list: Departed[] }
  // an account was removed (in band, or by the CLI through the admin socket)
  | { t: 'removed'; notice: RemovalNotice }
  // what the modules keep of an account changed in the stores (the CLI, through the admin socket)
  | { t: 'changed'; kind: string; user: string }
  // the worker with this index died: its port is closed
  | { t: 'peer-gone'; index: number }
  // the answer to a 'pep' call
  | { t: 'pep'; q: number; v: unknown }
  // a scrape of /metrics: this worker's metrics, please (answered with 'collected')
  | { t: 'collect'; q: number }
  // the node's /metrics text a worker asked for, or why there is none
  | { t: 'metrics'; q: number; text?: string; error?: string }
  // run the node's upkeep (archive retention, expired uploads) and say 'upkept': the hub asks one worker at a time
  | { t: 'upkeep' }
  // the answer to a 'guard' call
  | { t: 'guard'; q: number; v: unknown }
  // the administration socket (admin/tasks.ts): a task for this worker, answered with 'admin' and its q
  | { t: 'admin'; q: number; task: AdminTask }
  // a reload (SIGHUP): the settings that may change without a restart
  // (config/index.ts RELOADABLE), all of them, and the certificate, key and
  // XMPP_TLS_CA as read by the main thread; a worker that joins later gets it too
  | { t: 'reload'; config: Partial<Config>; tls: TlsIdentity & { ca?: string } }
  // tests only (honoured where XMPP_TEST_FAULTS=1): throw out of the thread, as a crash would
  | { t: 'fault' }
  // the ports the HTTP listeners got (sticky: workers that join later get it too), for the URLs of uploads (XEP-0363)
  | { t: 'http-ports'; ports: HttpPorts };

/**
 * Worker ↔ worker (and node ↔ node): delivery to one session. `only` marks a
 * stanza meant only for a session in some state, which is known only where
 * it lives: a roster push for a resource that requested the roster
 * ('roster'), a carbon copy for one that enabled carbons ('carbons'),
 * presence for an available resource ('available': available by the last
 * presence it sent, processed or not), a subscription approval or
 * cancellation for one available or interested ('subscription').
 */
// 'blocklist': a blocklist push (XEP-0191 §5.3) for a resource that requested the blocklist.
// 'notify …': a PEP event (XEP-0163 §4.2) for an available resource, which the PEP module's notify hook
// takes or not where the session lives (its caps, what it was handed already): modules/pep.ts notifyOnly.
// 'copy': one of several copies of a message to a bare JID (RFC 6121
// §8.5.2.1.1). One that finds its session gone on the sender's worker is
// counted there with the other copies (undeliverable only if none was
// taken); one that crossed to another worker or node is answered where it
// lands, as its `reroute` says (Router.onEnvelope).
export type Only = 'roster' | 'carbons' | 'copy' | 'available' | 'subscription' | 'blocklist' | `notify ${string}`;
// fwd: passed on by the worker a session moved away from (XEP-0198 §5), not
// to be passed on again
// bosh, bosh-res: a BOSH request for the worker its session lives on, and the answer back (web/bosh.ts)
export type Envelope = SessionEnvelope | ResumeEnvelope | S2sEnvelope | ChangeEnvelope | ChangeAckEnvelope | ServiceEnvelope | AnswerEnvelope | ServiceControlEnvelope | ServiceFanEnvelope | BoshEnvelope;
type SessionEnvelope = (
  // solicited: an answer the session asked for (not unsolicited output);
  // reroute: what to do with it if the session cannot write it (Reroute)
  | { t: 'deliver'; jid: string; sid: string; xml: string; only?: Only; solicited?: boolean; reroute?: Reroute }
  // a message to a bare JID with no resource available by the registry: the
  // session takes it if it is available by the presence it last sent, else
  // passes it to the next in `rest`; the last one stores it (XEP-0160)
  | { t: 'try'; jid: string; sid: string; xml: string; rest: SessionRecord[]; late?: boolean }
  // RFC 6121 §4.3.2: send your current presence to answerTo
  // arriving: the answer makes the session newly available to answerTo (DeliverOptions.arriving); absent: false
  | { t: 'probe'; jid: string; sid: string; answerTo: string; arriving?: boolean }
  // XEP-0160: a message was stored just as this session became available: take it
  | { t: 'offline'; jid: string; sid: string }
  | { t: 'kick'; jid: string; sid: string; condition: StreamCondition; text?: string }
) & { fwd?: true };
type ResumeEnvelope =
  // XEP-0198 §5: a connection at (node, worker), opened at `since` (wall
  // clock, ms), resumes this session with the client's h; the answer is a
  // 'taken' numbered q, sent there
  | { t: 'take'; jid: string; sid: string; fwd?: undefined; token: string; h: number; since: number; q: number; node: string; worker: number }
  // the session handed over, or why not: gone (neither), or h beyond `sent` (and the session's own h, `handled`)
  | { t: 'taken'; jid: string; sid: string; fwd?: undefined; q: number; handoff?: Handoff; sent?: number; handled?: number };

/**
 * Worker ↔ worker of one node (s2s/federation.ts): a stanza for a peer
 * server, to the worker that owns the stream to it; a dialback key to
 * verify over that stream (XEP-0220 §2.1.3), answered to the asking worker.
 */
export type S2sEnvelope = (
  | { t: 's2s'; local: string; remote: string; xml: string }
  | { t: 's2s-verify'; q: number; worker: number; local: string; remote: string; id: string; key: string }
  | { t: 's2s-verified'; q: number; result: 'valid' | 'invalid' | 'error' }
) & { jid?: undefined; sid?: undefined; fwd?: undefined };

/**
 * Worker → every other worker of the node (and, through Redis, of the
 * cluster): what a module keeps for an account changed (a blocklist); each
 * worker drops its copy (ServerModule.changed). With `q`, the receiving
 * worker answers 'changed-ok' with it once its copy is gone: the sender
 * waits for that before it answers the client (worker.ts announceChange).
 */
export type ChangeEnvelope = { t: 'changed'; kind: string; user: string; q?: number; jid?: undefined; sid?: undefined; fwd?: undefined };
export type ChangeAckEnvelope = { t: 'changed-ok'; q: number; jid?: undefined; sid?: undefined; fwd?: undefined };

/** Worker ↔ worker (and node ↔ node): a stanza to a hosted service's address, for the worker its actor lives on (XEP-0045 rooms). */
export type ServiceEnvelope = { t: 'svc'; domain: string; xml: string; jid?: undefined; sid?: undefined; fwd?: undefined };

/**
 * Worker → worker (or node → node): an iq result or error from a peer
 * server's entity answering a request the server sent on a module's behalf
 * (Router.requestId), read where the peer's stream came in: to the worker
 * that asked.
 */
export type AnswerEnvelope = { t: 'answer'; xml: string; jid?: undefined; sid?: undefined; fwd?: undefined };

/**
 * Worker ↔ worker (and node ↔ node): what a hosted service asks of one of
 * its actors on its own (XEP-0045: a room looks for occupants whose node
 * died, 'sweep'; a session that ended without a word is removed, 'gone').
 */
export type ServiceControlEnvelope = { t: 'svc-ctl'; domain: string; room: string; op: 'sweep' | 'gone'; full?: string; jid?: undefined; sid?: undefined; fwd?: undefined };
/**
 * Node → node: one stanza of a hosted service's actor (a room's message or
 * presence, without 'to') for several sessions of the receiving node, by
 * full JID: a room fans out once per node, not once per occupant; the
 * receiving worker routes a copy to each, in the order the envelopes came.
 */
export type ServiceFanEnvelope = { t: 'svc-fan'; domain: string; xml: string; to: string[]; jid?: undefined; sid?: undefined; fwd?: undefined };
