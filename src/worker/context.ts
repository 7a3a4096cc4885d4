// What every actor of one worker shares: configuration, TLS context, the
// account store, the registry view, the router and the local sessions.
import type { SecureContext } from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import type { Config } from '../config/index.ts';
import type { AccountStore } from '../accounts/store.ts';
import type { RosterStore } from '../roster/store.ts';
import type { OfflineStore } from '../offline/store.ts';
import type { SessionRegistry } from '../registry/registry.ts';
import type { Router } from '../router/router.ts';
import type { Session } from '../session/session.ts';
import type { RemovalNotice } from '../accounts/removal.ts';
import type { Hooks } from '../modules/module.ts';
import type { Resumption } from '../session/resumption.ts';
import type { DurableSessions } from '../session/durable.ts';
import type { ComponentStream } from '../component/stream.ts';
import type { Federation } from '../s2s/federation.ts';
import type { UploadHttp } from '../upload/http.ts';
import type { NodeGuard } from './guard.ts';
import type { HashGate } from '../accounts/hashing.ts';

export interface WorkerContext {
  config: Config;
  secureContext: SecureContext;
  /** XMPP_TLS_CA's certificates (client certificates for SASL EXTERNAL). */
  trustAnchors: X509Certificate[];
  accounts: AccountStore;
  roster: RosterStore;
  offline: OfflineStore;
  registry: SessionRegistry;
  router: Router;
  /** What the modules hook into client streams. */
  hooks: Hooks;
  node: string;
  index: number;
  /** Bound sessions of this worker by stream id: two streams may briefly claim one full JID while a conflict is resolved. */
  sessions: Map<string, Session>;
  /** Bound sessions of this worker by full JID: the latest to bind it, so routing to them needs no registry lookup. */
  local: Map<string, Session>;
  /** Sessions of this worker that closed with writes under way, by stream id: what reaches them meanwhile is rerouted after those writes. */
  closing: Map<string, Session>;
  /** Sessions of this worker whose connection is gone, waiting to be resumed (XEP-0198 §5), by id. */
  detached: Map<string, Session>;
  /** XMPP_SM_DURABLE (cluster): where resumable sessions' state is kept as it changes; undefined when off. */
  durable: DurableSessions | undefined;
  /** Hands sessions between connections, here and across the cluster (XEP-0198 §5). */
  resumption: Resumption;
  /** External components (XEP-0114) connected to this worker, by stream id. */
  components: Map<string, ComponentStream>;
  /** The configured components' domains and handshake secrets (XMPP_COMPONENTS). */
  componentSecrets: Map<string, string>;
  /** Federation (XMPP_S2S): this worker's streams to and from peer servers; undefined when off. */
  s2s: Federation | undefined;
  /** The PUT and GET URLs of HTTP upload (XEP-0363), when the upload service is on. */
  upload: UploadHttp | undefined;
  /** Every connection of this worker, bound or not. */
  all: Set<Session>;
  /** Removes an account and its data (accounts/removal.ts); undefined when there is none. */
  removeAccount(user: string): Promise<RemovalNotice | undefined>;
  /** Tells every worker of every node that an account was removed. */
  announceRemoval(notice: RemovalNotice): void;
  /** Accounts removed lately: when this worker learnt it (its own clock), and which notice (for its echo). */
  removed: Map<string, { at: number; notice: number }>;
  /** The node's record of failed authentications and registrations (throttling, shared by its workers). */
  guard: NodeGuard;
  /** This worker's bound on password hashing in flight (PLAIN, registration, password change). */
  hashing: HashGate;
}
