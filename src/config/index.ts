// Typed configuration, validated once at start. Every setting has an
// environment variable; a JSON file (XMPP_CONFIG or xmpp.config.json in the
// installation directory) may set the same keys. Environment wins over the
// file, the file over defaults.
//
// Relative paths never depend on the working directory, so that the server
// and the CLI, started from anywhere, find the same files: those set in the
// config file are relative to its directory, the others (environment,
// defaults, XMPP_CONFIG itself) to the installation directory.
import { readFileSync, existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { randomUUID } from 'node:crypto';
import { isIP, BlockList } from 'node:net';
import { fileURLToPath } from 'node:url';

/** The installation directory (the repository root, where package.json is): the base of relative paths. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

/** The config file read when XMPP_CONFIG is not set, if it exists. */
export const DEFAULT_CONFIG_FILE = join(ROOT, 'xmpp.config.json');

/** Environment variables that are not settings but are read all the same. */
// XMPP_TEST_FAULTS, XMPP_TEST_CHANGE_DELAY_MS: tests only, see src/worker/worker.ts.
const OTHER_VARIABLES = ['XMPP_CONFIG', 'XMPP_TEST_FAULTS', 'XMPP_TEST_CHANGE_DELAY_MS'];
import { normalizeDomain, parseJid, JidError } from '../xmpp/jid.ts';
import type { Jid } from '../xmpp/jid.ts';

export type ConflictPolicy = 'new-wins' | 'old-wins' | 'assign';

export interface Config {
  domain: string;
  bindHost: string;
  c2sPort: number;
  tlsPort: number;
  dataDir: string;
  workers: number;
  registration: boolean;
  anonymous: boolean;
  tlsRequired: boolean;
  tlsCert: string;
  tlsKey: string;
  scramIterations: number;
  maxStanzaBytes: number;
  maxStanzaElements: number;
  bindTimeoutMs: number;
  idleTimeoutMs: number;
  conflictPolicy: ConflictPolicy;
  maxResourcesPerAccount: number;
  maxRosterItems: number;
  maxRosterGroups: number;
  maxRosterBytes: number;
  maxPendingRequests: number;
  maxOutgoingRequests: number;
  maxOfflineMessages: number;
  maxOfflineBytes: number;
  mam: boolean;
  mamDefault: 'always' | 'roster' | 'never';
  mamFulltext: boolean;
  mamRetentionDays: number;
  mamMaxBuffered: number;
  maxAuthAttempts: number;
  maxOutboundBytes: number;
  csiMaxHeld: number;
  smResumeTimeoutMs: number;
  smDurable: boolean;
  componentPort: string;
  httpPort: string;
  httpsPort: string;
  httpTrustedProxies: string;
  httpPublicUrl: string;
  metrics: string;
  httpRequestTimeoutMs: number;
  boshMaxWait: number;
  boshInactivity: number;
  boshMaxPause: number;
  s2s: boolean;
  s2sPort: number;
  s2sBindHost: string;
  s2sTlsPort: string;
  s2sHosts: string;
  s2sSecureAuth: boolean;
  s2sSecret: string;
  s2sDnsTimeoutMs: number;
  s2sDnsServers: string;
  s2sConnectTimeoutMs: number;
  s2sIdleTimeoutMs: number;
  s2sMaxQueue: number;
  tlsCa: string;
  components: string;
  pubsubDomain: string;
  mucDomain: string;
  uploadDomain: string;
  uploadDir: string;
  uploadMaxBytes: number;
  uploadQuotaBytes: number;
  uploadTypes: string;
  uploadExpireDays: number;
  extdiscoServices: string;
  turnSecret: string;
  turnTtlSeconds: number;
  admins: string;
  adhocIdleMs: number;
  readRateBytes: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  connectionRatePerIp: number;
  perIpExempt: string;
  proxyProtocolFrom: string;
  authFailuresPerIp: number;
  authFailuresPerAccount: number;
  authLockoutMs: number;
  authFailDelayMs: number;
  registrationRate: string;
  hashConcurrency: number;
  hashQueue: number;
  maxReadsPerSecond: number;
  idleGcMs: number;
  shutdownTimeoutMs: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  redisUrl: string;
  databaseUrl: string;
  redisStartupTimeoutMs: number;
  nodeId: string;
  leaseMs: number;
}

type Kind = 'string' | 'port' | 'int' | 'bool' | 'enum';
interface Setting {
  key: keyof Config;
  env: string;
  kind: Kind;
  values?: readonly string[];
  min?: number;
  /** A file or directory: a relative value is resolved (see the top of this file). */
  path?: true;
  doc: string;
  default: (c: Partial<Config>) => unknown;
}

/** PREFIX.<domain> for a hosted service, unless the domain is an IP address or an external component (XMPP_COMPONENTS) has that domain already. */
const defaultServiceDomain = (prefix: string) => (c: Partial<Config>): string => {
  const domain = String(c.domain ?? 'localhost');
  if (isIP(domain.replace(/^\[|\]$/g, ''))) return '';
  const candidate = `${prefix}.${domain}`;
  try {
    if (componentsOf({ components: c.components ?? '', domain }).has(normalizeDomain(candidate))) return '';
  } catch {
    // A malformed XMPP_COMPONENTS or domain is reported by the checks below.
  }
  return candidate;
};

/** Whether an HTTP listener can serve uploads: HTTPS, or plain HTTP behind a TLS-terminating proxy at XMPP_HTTP_PUBLIC_URL (XEP-0363 §4: the host MUST provide TLS). */
const uploadListener = (c: Partial<Config>): boolean => (c.httpsPort ?? '') !== '' || ((c.httpPort ?? '') !== '' && (c.httpPublicUrl ?? '') !== '');

/** The one table of settings: README's configuration section mirrors it. */
export const SETTINGS: readonly Setting[] = [
  { key: 'domain', env: 'XMPP_DOMAIN', kind: 'string', doc: 'the domain this server serves: a domain name (kept in lowercase U-labels) or an IP address, IPv6 in brackets (RFC 7622 §3.2)', default: () => 'localhost' },
  { key: 'bindHost', env: 'XMPP_BIND_HOST', kind: 'string', doc: 'address the listeners bind to', default: () => '127.0.0.1' },
  { key: 'c2sPort', env: 'XMPP_C2S_PORT', kind: 'port', doc: 'client port (STARTTLS); 0 picks a free port', default: () => 5222 },
  { key: 'tlsPort', env: 'XMPP_TLS_PORT', kind: 'port', doc: 'direct-TLS client port (XEP-0368); 0 picks a free port', default: () => 5223 },
  { key: 'dataDir', env: 'XMPP_DATA_DIR', kind: 'string', path: true, doc: 'where accounts and the generated certificate live', default: () => 'data' },
  { key: 'workers', env: 'XMPP_WORKERS', kind: 'int', min: 1, doc: 'worker threads holding connections', default: () => availableParallelism() },
  { key: 'registration', env: 'XMPP_REGISTRATION', kind: 'bool', doc: 'in-band registration (XEP-0077)', default: () => false },
  { key: 'anonymous', env: 'XMPP_ANONYMOUS', kind: 'bool', doc: 'SASL ANONYMOUS (XEP-0175)', default: () => false },
  { key: 'tlsRequired', env: 'XMPP_TLS_REQUIRED', kind: 'bool', doc: 'require TLS before authentication', default: () => true },
  { key: 'tlsCert', env: 'XMPP_TLS_CERT', kind: 'string', path: true, doc: 'PEM certificate; empty: self-signed one generated in the data directory', default: () => '' },
  { key: 'tlsKey', env: 'XMPP_TLS_KEY', kind: 'string', path: true, doc: 'PEM private key matching XMPP_TLS_CERT', default: () => '' },
  { key: 'tlsCa', env: 'XMPP_TLS_CA', kind: 'string', path: true, doc: "PEM file of extra trust anchors: a client certificate that chains up to them, naming an account (XmppAddr), may log in with SASL EXTERNAL (empty: no client certificates asked for); peer servers' certificates are checked against them and the system's trust store", default: () => '' },
  { key: 'scramIterations', env: 'XMPP_SCRAM_ITERATIONS', kind: 'int', min: 4096, doc: 'PBKDF2 iterations for new SCRAM hashes (RFC 7677: at least 4096)', default: () => 4096 },
  { key: 'maxStanzaBytes', env: 'XMPP_MAX_STANZA_BYTES', kind: 'int', min: 1024, doc: 'largest stanza accepted, in bytes', default: () => 256 * 1024 },
  { key: 'maxStanzaElements', env: 'XMPP_MAX_STANZA_ELEMENTS', kind: 'int', min: 16, doc: 'most elements one stanza may hold (and, four times that, attributes); more is a policy-violation', default: () => 4096 },
  { key: 'bindTimeoutMs', env: 'XMPP_BIND_TIMEOUT_MS', kind: 'int', min: 1, doc: 'time allowed from connect to resource binding', default: () => 30_000 },
  { key: 'idleTimeoutMs', env: 'XMPP_IDLE_TIMEOUT_MS', kind: 'int', min: 0, doc: 'close established sessions silent this long (0: never); a session with resumption (XEP-0198) only loses its connection and waits to be resumed', default: () => 600_000 },
  { key: 'conflictPolicy', env: 'XMPP_CONFLICT_POLICY', kind: 'enum', values: ['new-wins', 'old-wins', 'assign'], doc: 'resource already bound: new session wins, old one wins, or server assigns another resource', default: () => 'new-wins' },
  { key: 'maxRosterItems', env: 'XMPP_MAX_ROSTER_ITEMS', kind: 'int', min: 1, doc: 'items one roster may hold', default: () => 1000 },
  { key: 'maxRosterGroups', env: 'XMPP_MAX_ROSTER_GROUPS', kind: 'int', min: 1, doc: 'groups one roster item may be in', default: () => 32 },
  { key: 'maxRosterBytes', env: 'XMPP_MAX_ROSTER_BYTES', kind: 'int', min: 65536, doc: "bytes one roster's items may take (JIDs, names and groups)", default: () => 1024 * 1024 },
  { key: 'maxPendingRequests', env: 'XMPP_MAX_PENDING_REQUESTS', kind: 'int', min: 1, doc: 'unanswered subscription requests kept for one user from senders not in its roster; beyond it senders get resource-constraint', default: () => 100 },
  { key: 'maxOutgoingRequests', env: 'XMPP_MAX_OUTGOING_REQUESTS', kind: 'int', min: 1, doc: 'unanswered subscription requests one user may have sent; beyond it the user gets policy-violation', default: () => 100 },
  { key: 'maxOfflineMessages', env: 'XMPP_MAX_OFFLINE', kind: 'int', min: 0, doc: 'messages kept for one offline user (XEP-0160); when full, senders get service-unavailable (0: no offline storage)', default: () => 100 },
  { key: 'maxOfflineBytes', env: 'XMPP_MAX_OFFLINE_BYTES', kind: 'int', min: 1024, doc: "bytes of messages kept for one offline user; when full, senders get service-unavailable", default: () => 2 * 1024 * 1024 },
  { key: 'mam', env: 'XMPP_MAM', kind: 'bool', doc: "message archive (XEP-0313): one-to-one messages kept in both parties' archives for their clients to query", default: () => true },
  { key: 'mamDefault', env: 'XMPP_MAM_DEFAULT', kind: 'enum', values: ['always', 'roster', 'never'], doc: "what an account that set no archiving preferences keeps: every message, only those with roster contacts, or none (XEP-0313 §6)", default: () => 'always' },
  { key: 'mamFulltext', env: 'XMPP_MAM_FULLTEXT', kind: 'bool', doc: "full-text search of archived bodies (XEP-0431): an index of every body, which makes archiving a message about 3.5 times as dear for SQLite and 1.7 times for PostgreSQL; every node of a cluster should say the same", default: () => false },
  { key: 'mamRetentionDays', env: 'XMPP_MAM_RETENTION_DAYS', kind: 'int', min: 0, doc: 'archived messages older than this many days, in accounts\' and rooms\' archives alike, are removed in the background (0: kept for ever)', default: () => 0 },
  { key: 'mamMaxBuffered', env: 'XMPP_MAM_MAX_BUFFERED', kind: 'int', min: 100, doc: "archive rows a worker holds while the database is slow or away (past half, senders wait for writes while the database makes progress); beyond it messages are refused with resource-constraint (and it is logged)", default: () => 20_000 },
  { key: 'maxResourcesPerAccount', env: 'XMPP_MAX_RESOURCES', kind: 'int', min: 1, doc: 'sessions one account may bind at once', default: () => 10 },
  { key: 'maxAuthAttempts', env: 'XMPP_MAX_AUTH_ATTEMPTS', kind: 'int', min: 1, doc: 'failed SASL attempts before the stream is closed', default: () => 3 },
  { key: 'maxOutboundBytes', env: 'XMPP_MAX_OUTBOUND_BYTES', kind: 'int', min: 65536, doc: 'unsent bytes queued for a slow reader before it is disconnected', default: () => 4 * 1024 * 1024 },
  { key: 'csiMaxHeld', env: 'XMPP_CSI_MAX_HELD', kind: 'int', min: 1, doc: "contacts whose presence is held for a client that said it is inactive (XEP-0352); one more and all of it is sent", default: () => 256 },
  { key: 'smResumeTimeoutMs', env: 'XMPP_SM_RESUME_TIMEOUT_MS', kind: 'int', min: 1000, doc: "how long a session whose connection dropped waits, detached, for its client to resume it (XEP-0198); then it ends, its unacknowledged messages stored offline or bounced", default: () => 300_000 },
  { key: 'smDurable', env: 'XMPP_SM_DURABLE', kind: 'bool', doc: "cluster: keep each resumable session's unacknowledged stanzas and counts in Redis as they change, so that its client can resume it on another node after its node died (XEP-0198); costs Redis writes per stanza", default: () => false },
  { key: 'componentPort', env: 'XMPP_COMPONENT_PORT', kind: 'string', doc: 'port for external components (XEP-0114) at XMPP_BIND_HOST; empty: no component listener; 0 picks a free port', default: () => '' },
  { key: 'httpPort', env: 'XMPP_HTTP_PORT', kind: 'string', doc: "plain HTTP port at XMPP_BIND_HOST for web clients (WebSocket at /xmpp-websocket, BOSH at /http-bind, XEP-0156 host-meta); authentication over it only from loopback or a trusted proxy (XMPP_HTTP_TRUSTED_PROXIES); empty: none; 0 picks a free port", default: () => '' },
  { key: 'httpsPort', env: 'XMPP_HTTPS_PORT', kind: 'string', doc: "HTTPS port at XMPP_BIND_HOST for web clients (WebSocket at /xmpp-websocket, BOSH at /http-bind, XEP-0156 host-meta), with the server's certificate; empty: none; 0 picks a free port", default: () => '' },
  { key: 'httpTrustedProxies', env: 'XMPP_HTTP_TRUSTED_PROXIES', kind: 'string', doc: "addresses or CIDR blocks of TLS-terminating reverse proxies in front of XMPP_HTTP_PORT, comma-separated: a plain connection from one counts as secure when it says X-Forwarded-Proto: https, and its X-Forwarded-For names the client; empty: none", default: () => '' },
  { key: 'httpPublicUrl', env: 'XMPP_HTTP_PUBLIC_URL', kind: 'string', doc: "the https:// URL (scheme, host, optional port and path) at which browsers reach the HTTPS listener, as host-meta announces it (behind a proxy: the proxy's); empty: https://<domain>:<XMPP_HTTPS_PORT>", default: () => '' },
  { key: 'metrics', env: 'XMPP_METRICS', kind: 'string', doc: "addresses or CIDR blocks (comma-separated) allowed to read /metrics, the node's Prometheus metrics, on the HTTP and HTTPS listeners; a request relayed by a proxy counts from the client's address when the proxy is in XMPP_HTTP_TRUSTED_PROXIES, and is refused otherwise; empty: /metrics is not served", default: () => '' },
  { key: 'httpRequestTimeoutMs', env: 'XMPP_HTTP_REQUEST_TIMEOUT_MS', kind: 'int', min: 100, doc: "time allowed for an HTTP request's headers and body to arrive, on the HTTP and HTTPS listeners, but for an upload's PUT (XEP-0363), which has 10 minutes; a request still arriving then is answered 408 and its connection closed", default: () => 30_000 },
  { key: 'boshMaxWait', env: 'XMPP_BOSH_MAX_WAIT', kind: 'int', min: 1, doc: "BOSH (XEP-0124) at /http-bind: longest a request is held, in seconds, whatever longer 'wait' the client asks for", default: () => 60 },
  { key: 'boshInactivity', env: 'XMPP_BOSH_INACTIVITY', kind: 'int', min: 1, doc: 'BOSH: a session with no request for this long, in seconds, has lost its client (its stream ends as a lost connection would: resumable with XEP-0198)', default: () => 60 },
  { key: 'boshMaxPause', env: 'XMPP_BOSH_MAX_PAUSE', kind: 'int', min: 1, doc: "BOSH: longest pause, in seconds, a client may ask for (XEP-0124 'maxpause'), during which it sends no request", default: () => 120 },
  { key: 'components', env: 'XMPP_COMPONENTS', kind: 'string', doc: "external components allowed to connect, as 'domain=secret,...' (XEP-0114 handshake secrets)", default: () => '' },
  { key: 'pubsubDomain', env: 'XMPP_PUBSUB_DOMAIN', kind: 'string', doc: "domain of the publish-subscribe service (XEP-0060) the server hosts; empty: none", default: defaultServiceDomain('pubsub') },
  { key: 'mucDomain', env: 'XMPP_MUC_DOMAIN', kind: 'string', doc: "domain of the multi-user chat service (XEP-0045) the server hosts; empty: none", default: defaultServiceDomain('conference') },
  { key: 'uploadDomain', env: 'XMPP_UPLOAD_DOMAIN', kind: 'string', doc: "domain of the HTTP file upload service (XEP-0363) the server hosts, its files put and got on the HTTPS listener (or on XMPP_HTTP_PORT behind XMPP_HTTP_PUBLIC_URL); empty: none", default: (c) => (uploadListener(c) ? defaultServiceDomain('upload')(c) : '') },
  { key: 'uploadDir', env: 'XMPP_UPLOAD_DIR', kind: 'string', path: true, doc: 'where uploaded files (XEP-0363) are kept; in a cluster, a directory every node shares (a network or shared volume): a node serves only what it finds there', default: (c) => join(String(c.dataDir ?? 'data'), 'upload') },
  { key: 'uploadMaxBytes', env: 'XMPP_UPLOAD_MAX_BYTES', kind: 'int', min: 1, doc: 'largest file one upload slot may be for (XEP-0363 max-file-size); a request for more gets file-too-large', default: () => 10 * 1024 * 1024 },
  { key: 'uploadQuotaBytes', env: 'XMPP_UPLOAD_QUOTA_BYTES', kind: 'int', min: 0, doc: "bytes of uploaded files (and slots being uploaded) one account may hold at once; a slot beyond it gets resource-constraint until older files expire (0: no per-account quota)", default: () => 1024 * 1024 * 1024 },
  { key: 'uploadTypes', env: 'XMPP_UPLOAD_TYPES', kind: 'string', doc: "media types a file may be uploaded as, comma-separated, 'type/*' for a whole type (image/*,video/*,audio/*,application/pdf); others get not-acceptable; empty: any", default: () => '' },
  { key: 'uploadExpireDays', env: 'XMPP_UPLOAD_EXPIRE_DAYS', kind: 'int', min: 0, doc: 'uploaded files are removed this many days after their upload, and their URLs then get 404 (0: kept for ever)', default: () => 30 },
  { key: 'extdiscoServices', env: 'XMPP_EXTDISCO_SERVICES', kind: 'string', doc: "STUN and TURN servers announced to the server's users (XEP-0215), as URIs, comma-separated: 'stun:host[:port]', 'turn:host[:port][?transport=udp|tcp]', 'stuns:', 'turns:' (RFC 7064, RFC 7065); empty: none", default: () => '' },
  { key: 'turnSecret', env: 'XMPP_TURN_SECRET', kind: 'string', doc: "secret shared with the TURN servers (coturn's static-auth-secret): each user gets time-limited credentials made with it (the TURN REST API scheme); empty: TURN servers are announced without credentials", default: () => '' },
  { key: 'turnTtlSeconds', env: 'XMPP_TURN_TTL_SECONDS', kind: 'int', min: 60, doc: 'how long TURN credentials given to a user stay valid', default: () => 86_400 },
  { key: 'admins', env: 'XMPP_ADMINS', kind: 'string', doc: "bare JIDs of this domain's accounts that may run the service administration commands (XEP-0133), comma-separated; empty: nobody", default: () => '' },
  { key: 'adhocIdleMs', env: 'XMPP_ADHOC_IDLE_MS', kind: 'int', min: 100, doc: "an ad-hoc command session (XEP-0050) with no request for this long ends; its sessionid then gets session-expired", default: () => 600_000 },
  { key: 's2s', env: 'XMPP_S2S', kind: 'bool', doc: 'federation with other servers (RFC 6120 server-to-server streams); false: stanzas to other domains get remote-server-not-found', default: () => true },
  { key: 's2sPort', env: 'XMPP_S2S_PORT', kind: 'port', doc: 'server-to-server port (STARTTLS) at XMPP_S2S_BIND_HOST; 0 picks a free port', default: () => 5269 },
  { key: 's2sBindHost', env: 'XMPP_S2S_BIND_HOST', kind: 'string', doc: 'address the server-to-server listeners bind to', default: (c) => c.bindHost },
  { key: 's2sTlsPort', env: 'XMPP_S2S_TLS_PORT', kind: 'string', doc: 'direct-TLS server-to-server port (XEP-0368); empty: none; 0 picks a free port', default: () => '' },
  { key: 's2sHosts', env: 'XMPP_S2S_HOSTS', kind: 'string', doc: "where peer servers are, as 'domain=host:port,...', instead of DNS SRV and A/AAAA lookups (private federations, tests)", default: () => '' },
  { key: 's2sSecureAuth', env: 'XMPP_S2S_SECURE_AUTH', kind: 'bool', doc: 'accept and reach only peer servers whose certificate validates (system trust store plus XMPP_TLS_CA) for their domain; false: dialback over a connection with an unverified certificate is accepted', default: () => true },
  { key: 's2sSecret', env: 'XMPP_S2S_SECRET', kind: 'string', doc: "secret dialback keys are derived from (XEP-0185); every node of a cluster must have the same; empty: derived from the TLS private key, which the nodes share", default: () => '' },
  { key: 's2sDnsTimeoutMs', env: 'XMPP_S2S_DNS_TIMEOUT_MS', kind: 'int', min: 100, doc: "time allowed for the DNS lookups that find a peer server", default: () => 3_000 },
  { key: 's2sDnsServers', env: 'XMPP_S2S_DNS_SERVERS', kind: 'string', doc: "DNS servers for finding peer servers, as 'ip,ip:port,[ipv6]:port'; empty: the system's", default: () => '' },
  { key: 's2sConnectTimeoutMs', env: 'XMPP_S2S_CONNECT_TIMEOUT_MS', kind: 'int', min: 100, doc: "time allowed to look a peer server up and connect to one of its addresses, and then again to secure and authenticate the stream; stanzas waiting for it then get remote-server-timeout", default: () => 15_000 },
  { key: 's2sIdleTimeoutMs', env: 'XMPP_S2S_IDLE_TIMEOUT_MS', kind: 'int', min: 1000, doc: 'close an outgoing server-to-server stream that carried nothing for this long', default: () => 300_000 },
  { key: 's2sMaxQueue', env: 'XMPP_S2S_MAX_QUEUE', kind: 'int', min: 1, doc: 'stanzas waiting for one peer server while its stream is set up; more get resource-constraint', default: () => 1000 },
  { key: 'readRateBytes', env: 'XMPP_READ_RATE_BYTES', kind: 'int', min: 0, doc: 'bytes per second read from one connection before reading pauses (0: unlimited)', default: () => 1024 * 1024 },
  { key: 'maxConnections', env: 'XMPP_MAX_CONNECTIONS', kind: 'int', min: 0, doc: 'open client connections this node accepts; more are closed at once (0: derived from the open-file limit, keeping room for stores and peers)', default: () => 0 },
  { key: 'maxConnectionsPerIp', env: 'XMPP_MAX_CONNECTIONS_PER_IP', kind: 'int', min: 0, doc: 'open connections from one IP address; more are closed at once (0: no per-address cap)', default: () => 0 },
  { key: 'connectionRatePerIp', env: 'XMPP_CONNECTION_RATE_PER_IP', kind: 'int', min: 0, doc: 'new connections per second from one IP address (a burst of as many again is let in); more are closed at once (0: no limit)', default: () => 20 },
  { key: 'perIpExempt', env: 'XMPP_PER_IP_EXEMPT', kind: 'string', doc: "addresses or CIDR blocks, comma-separated, to which the per-address limits on connection rate, failed authentications and registrations do not apply (a load balancer that hides clients' addresses: 0.0.0.0/0,::/0); empty: none", default: () => '127.0.0.1,::1' },
  { key: 'proxyProtocolFrom', env: 'XMPP_PROXY_PROTOCOL_FROM', kind: 'string', doc: "addresses or CIDR blocks, comma-separated, of load balancers that begin every connection with a PROXY protocol header (v1 or v2: HAProxy's send-proxy, send-proxy-v2), on the client, server-to-server and HTTP listeners: the address it names is the client's for every limit, log line and metric; a connection from one of them without a valid header within 5 s is closed; empty: none (no header expected)", default: () => '' },
  { key: 'authFailuresPerIp', env: 'XMPP_AUTH_FAILURES_PER_IP', kind: 'int', min: 0, doc: 'failed authentications from one IP address (IPv6: one /64) within XMPP_AUTH_LOCKOUT_MS after which its attempts are refused with temporary-auth-failure for XMPP_AUTH_LOCKOUT_MS (0: no per-address limit)', default: () => 10 },
  { key: 'authFailuresPerAccount', env: 'XMPP_AUTH_FAILURES_PER_ACCOUNT', kind: 'int', min: 0, doc: 'failed authentications as one username within XMPP_AUTH_LOCKOUT_MS after which its attempts are refused the same way, except from addresses it logged in from lately (0: no per-account limit)', default: () => 10 },
  { key: 'authLockoutMs', env: 'XMPP_AUTH_LOCKOUT_MS', kind: 'int', min: 1000, doc: 'how long failed authentications are remembered, and a refusal lasts', default: () => 300_000 },
  { key: 'authFailDelayMs', env: 'XMPP_AUTH_FAIL_DELAY_MS', kind: 'int', min: 0, doc: 'delay before the answer to the 4th failed authentication of an address or account, doubled with each further one up to 16 times this (0: none)', default: () => 250 },
  { key: 'registrationRate', env: 'XMPP_REGISTRATION_RATE', kind: 'string', doc: "in-band registrations allowed from one IP address, as 'N/SECONDS': a burst of N, then N per SECONDS (Prosody's registration_throttle_max and registration_throttle_period); more get policy-violation; 0: no limit", default: () => '3/60' },
  { key: 'hashConcurrency', env: 'XMPP_HASH_CONCURRENCY', kind: 'int', min: 1, doc: 'password hashings (PBKDF2: SASL PLAIN, registration, password change) one worker runs at once; the others wait in its queue', default: () => 2 },
  { key: 'hashQueue', env: 'XMPP_HASH_QUEUE', kind: 'int', min: 0, doc: 'password hashings that may wait per worker; beyond it a PLAIN login is closed with resource-constraint, a registration or password change gets resource-constraint', default: () => 128 },
  { key: 'maxReadsPerSecond', env: 'XMPP_MAX_READS_PER_SECOND', kind: 'int', min: 0, doc: 'reads of under 64 bytes (TLS records, or TCP reads without TLS) per second from one connection; more ends the stream with policy-violation (0: no limit)', default: () => 2000 },
  { key: 'idleGcMs', env: 'XMPP_IDLE_GC_MS', kind: 'int', min: 0, doc: 'a thread quiet for this long after doing work runs a full garbage collection, and with glibc trims the C heap a period later, giving the memory of a burst back (0: never)', default: () => 2_000 },
  { key: 'shutdownTimeoutMs', env: 'XMPP_SHUTDOWN_TIMEOUT_MS', kind: 'int', min: 1, doc: 'bound on graceful shutdown', default: () => 5_000 },
  { key: 'logLevel', env: 'XMPP_LOG_LEVEL', kind: 'enum', values: ['debug', 'info', 'warn', 'error'], doc: 'log verbosity', default: () => 'info' },
  { key: 'redisUrl', env: 'XMPP_REDIS_URL', kind: 'string', doc: 'join a cluster through this Redis (the registry of sessions, leases, routes, resumption state; needs XMPP_DATABASE_URL); empty: single node', default: () => '' },
  { key: 'databaseUrl', env: 'XMPP_DATABASE_URL', kind: 'string', doc: "PostgreSQL for accounts, rosters and offline messages ('postgres://user:password@host:port/database'), instead of the SQLite files of a single node; required in a cluster", default: () => '' },
  { key: 'redisStartupTimeoutMs', env: 'XMPP_REDIS_STARTUP_TIMEOUT_MS', kind: 'int', min: 0, doc: 'cluster: how long a starting node waits for Redis before giving up (0: forever)', default: () => 60_000 },
  { key: 'leaseMs', env: 'XMPP_NODE_LEASE_MS', kind: 'int', min: 100, doc: "cluster: a node silent this long is declared dead and its sessions removed", default: () => 10_000 },
  { key: 'nodeId', env: 'XMPP_NODE_ID', kind: 'string', doc: "this node's name in a cluster (1 to 64 letters, digits, '.', '_', '-')", default: () => `node-${randomUUID().slice(0, 8)}` },
];

/**
 * The settings a reload (SIGHUP, `xmpp-server reload`) applies to the
 * running server, for new connections and from the next use on (the
 * certificate and key files are read again too, even under the same
 * paths). Every other setting takes a restart: a reload that changes one
 * says so in the log and leaves it as it was.
 */
export const RELOADABLE: ReadonlySet<keyof Config> = new Set<keyof Config>([
  'logLevel',
  'tlsCert', 'tlsKey', 'tlsCa', 'tlsRequired',
  'registration', 'anonymous', 'admins',
  'maxStanzaBytes', 'maxStanzaElements', 'bindTimeoutMs', 'idleTimeoutMs', 'conflictPolicy', 'maxResourcesPerAccount',
  'maxRosterItems', 'maxRosterGroups', 'maxRosterBytes', 'maxPendingRequests', 'maxOutgoingRequests',
  'maxOfflineMessages', 'maxOfflineBytes', 'mamDefault', 'maxAuthAttempts', 'maxOutboundBytes', 'csiMaxHeld', 'smResumeTimeoutMs',
  'readRateBytes', 'maxConnections', 'maxConnectionsPerIp', 'shutdownTimeoutMs',
  's2sHosts', 's2sSecureAuth', 's2sSecret', 's2sDnsTimeoutMs', 's2sDnsServers', 's2sConnectTimeoutMs', 's2sIdleTimeoutMs', 's2sMaxQueue',
]);

/** What a reload would do: the settings it applies, and those that changed but take a restart (environment variable names). */
export interface ConfigChange {
  /** The new configuration (the restart-only settings kept as they were). */
  next: Config;
  applied: string[];
  needRestart: string[];
  /** Keys the config file sets that the environment overrides: changing them in the file does nothing. */
  overridden: string[];
}

/**
 * Reads the configuration again (the environment is the process's, fixed
 * since it started: what changes is the config file) and sets it against
 * the running one. Throws a ConfigError as loadConfig does.
 */
export function reloadConfig(current: Config, env: NodeJS.ProcessEnv = process.env): ConfigChange {
  const { config: read, file } = readConfig(env);
  // A node id left to its default is a random one: the running one stays.
  if (env.XMPP_NODE_ID === undefined && file.nodeId === undefined) read.nodeId = current.nodeId;
  const next = { ...current };
  const applied: string[] = [];
  const needRestart: string[] = [];
  for (const s of SETTINGS) {
    if (read[s.key] === current[s.key]) continue;
    if (RELOADABLE.has(s.key)) {
      (next as unknown as Record<string, unknown>)[s.key] = read[s.key];
      applied.push(s.env);
    } else needRestart.push(s.env);
  }
  const overridden = SETTINGS.filter((s) => env[s.env] !== undefined && file[s.key] !== undefined).map((s) => s.key);
  return { next, applied, needRestart, overridden };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function coerce(s: Setting, raw: unknown, origin: string): unknown {
  const bad = (why: string) => new ConfigError(`${origin} ${why}`);
  switch (s.kind) {
    case 'string':
      if (typeof raw !== 'string') throw bad('must be a string');
      return raw;
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      const v = String(raw).toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(v)) return true;
      if (['0', 'false', 'no', 'off', ''].includes(v)) return false;
      throw bad(`must be true or false, got ${JSON.stringify(raw)}`);
    }
    case 'int':
    case 'port': {
      const n = typeof raw === 'number' ? raw : /^\s*\d+\s*$/.test(String(raw)) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n)) throw bad(`must be a whole number, got ${JSON.stringify(raw)}`);
      if (s.kind === 'port' && (n < 0 || n > 65535)) throw bad(`must be a port number (0-65535), got ${n}`);
      if (s.min !== undefined && n < s.min) throw bad(`must be at least ${s.min}, got ${n}`);
      return n;
    }
    case 'enum':
      if (!s.values!.includes(String(raw))) throw bad(`must be one of ${s.values!.join(', ')}, got ${JSON.stringify(raw)}`);
      return String(raw);
  }
}

/** How far apart two names are (Levenshtein): for "did you mean". */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length];
}

/** The known variable an unknown one was probably meant to be, if any is close. */
function closest(name: string): string | undefined {
  const bare = name.slice('XMPP_'.length);
  let best: { env: string; d: number } | undefined;
  for (const s of SETTINGS) {
    // Also the key's spelling (maxOfflineMessages: XMPP_MAX_OFFLINE_MESSAGES).
    const fromKey = s.key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
    const d = Math.min(distance(bare, s.env.slice('XMPP_'.length)), distance(bare, fromKey));
    if (!best || d < best.d) best = { env: s.env, d };
  }
  return best && best.d <= Math.max(2, Math.floor(bare.length / 5)) ? best.env : undefined;
}

/** A misspelt variable would otherwise be ignored in silence, its setting left at the default. */
function checkVariables(env: NodeJS.ProcessEnv): void {
  const known = new Set([...SETTINGS.map((s) => s.env), ...OTHER_VARIABLES]);
  const unknown = Object.keys(env).filter((k) => k.startsWith('XMPP_') && !known.has(k)).sort();
  if (unknown.length === 0) return;
  const named = unknown.map((k) => {
    const guess = closest(k);
    return guess ? `${k} (did you mean ${guess}?)` : k;
  });
  throw new ConfigError(`unknown environment variable${unknown.length > 1 ? 's' : ''} ${named.join(', ')}; \`config\` lists the settings`);
}

/** Builds the configuration from defaults, an optional JSON file and the environment. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return readConfig(env).config;
}

/** loadConfig, and what the config file said. */
function readConfig(env: NodeJS.ProcessEnv): { config: Config; file: Record<string, unknown> } {
  checkVariables(env);
  let file: Record<string, unknown> = {};
  const path = env.XMPP_CONFIG !== undefined ? resolve(ROOT, env.XMPP_CONFIG) : existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined;
  if (path) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(`config file ${path} must hold a JSON object of settings, got ${JSON.stringify(parsed)}`);
    file = parsed as Record<string, unknown>;
    const known = new Set(SETTINGS.map((s) => s.key as string));
    for (const k of Object.keys(file)) if (!known.has(k)) throw new ConfigError(`config file ${path}: unknown key "${k}"`);
  }
  const out: Partial<Config> = {};
  for (const s of SETTINGS) {
    let v: unknown;
    let base = ROOT;
    if (env[s.env] !== undefined) v = coerce(s, env[s.env], `environment variable ${s.env}`);
    else if (file[s.key] !== undefined) {
      v = coerce(s, file[s.key], `config file key "${s.key}"`);
      base = dirname(path!);
    } else v = s.default(out);
    // An empty path means "not set" (XMPP_TLS_CERT: generate one).
    if (s.path && v !== '') v = resolve(base, v as string);
    (out as Record<string, unknown>)[s.key] = v;
  }
  const c = out as Config;
  // RFC 7622 §3.2: the served domain is a JID domainpart, kept in the form
  // every address naming it normalises to.
  try {
    c.domain = normalizeDomain(c.domain);
  } catch (err) {
    if (!(err instanceof JidError)) throw err;
    throw new ConfigError(`XMPP_DOMAIN must be a domain name or an IP address (RFC 7622 §3.2): ${err.message}`);
  }
  // It names Redis keys and channels, and log lines: keep it plain.
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(c.nodeId)) throw new ConfigError(`XMPP_NODE_ID must be 1 to 64 letters, digits, '.', '_' or '-', got ${JSON.stringify(c.nodeId)}`);
  if (Boolean(c.tlsCert) !== Boolean(c.tlsKey)) throw new ConfigError('XMPP_TLS_CERT and XMPP_TLS_KEY must be set together');
  if (c.tlsCa && !existsSync(c.tlsCa)) throw new ConfigError(`XMPP_TLS_CA: no such file ${c.tlsCa}`);
  if (c.componentPort !== '' && !(/^\d{1,5}$/.test(c.componentPort) && Number(c.componentPort) <= 65535)) throw new ConfigError(`XMPP_COMPONENT_PORT must be a port number (0-65535) or empty, got ${JSON.stringify(c.componentPort)}`);
  for (const [key, env] of [['pubsubDomain', 'XMPP_PUBSUB_DOMAIN'], ['mucDomain', 'XMPP_MUC_DOMAIN'], ['uploadDomain', 'XMPP_UPLOAD_DOMAIN']] as const) {
    if (c[key] === '') continue;
    try {
      c[key] = normalizeDomain(c[key]);
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
      throw new ConfigError(`${env} must be a domain name (RFC 7622 §3.2): ${err.message}`);
    }
    if (c[key] === c.domain) throw new ConfigError(`${env} must differ from XMPP_DOMAIN`);
    if (componentsOf(c).has(c[key])) throw new ConfigError(`${env} ${c[key]} is also an external component's (XMPP_COMPONENTS): one or the other`);
  }
  const services = hostedDomains(c);
  if (new Set(services).size !== services.length) throw new ConfigError('XMPP_PUBSUB_DOMAIN, XMPP_MUC_DOMAIN and XMPP_UPLOAD_DOMAIN must differ');
  if (c.uploadDomain !== '' && !uploadListener(c)) throw new ConfigError('XMPP_UPLOAD_DOMAIN needs an HTTPS listener (XMPP_HTTPS_PORT), or XMPP_HTTP_PORT behind a TLS-terminating proxy at XMPP_HTTP_PUBLIC_URL: uploads and downloads go over HTTPS (XEP-0363 §4)');
  uploadTypesOf(c);
  extdiscoServicesOf(c);
  componentsOf(c);
  adminsOf(c);
  for (const [key, env] of [['httpPort', 'XMPP_HTTP_PORT'], ['httpsPort', 'XMPP_HTTPS_PORT']] as const) {
    if (c[key] !== '' && !(/^\d{1,5}$/.test(c[key]) && Number(c[key]) <= 65535)) throw new ConfigError(`${env} must be a port number (0-65535) or empty, got ${JSON.stringify(c[key])}`);
  }
  trustedProxiesOf(c);
  metricsAllowedOf(c);
  perIpExemptOf(c);
  proxyProtocolFromOf(c);
  registrationRateOf(c);
  publicUrlOf(c);
  if (c.s2sTlsPort !== '' && !(/^\d{1,5}$/.test(c.s2sTlsPort) && Number(c.s2sTlsPort) <= 65535)) throw new ConfigError(`XMPP_S2S_TLS_PORT must be a port number (0-65535) or empty, got ${JSON.stringify(c.s2sTlsPort)}`);
  s2sHostsOf(c);
  dnsServersOf(c);
  if (c.databaseUrl !== '' && !/^postgres(ql)?:\/\//.test(c.databaseUrl)) throw new ConfigError(`XMPP_DATABASE_URL must be a postgres:// URL, got ${JSON.stringify(c.databaseUrl.replace(/:[^:@/]*@/, ':***@'))}`);
  // Redis holds only what may be lost (registry, leases, resumption state, caches): a cluster's accounts, rosters and offline messages are in PostgreSQL.
  if (c.redisUrl && !c.databaseUrl) throw new ConfigError('XMPP_REDIS_URL (a cluster) needs XMPP_DATABASE_URL: a cluster keeps accounts, rosters and offline messages in PostgreSQL, Redis only what is ephemeral; see "Running a cluster" in README.md (the data of a cluster that kept them in Redis moves with `db import-redis`)');
  // Durable state is for a node that dies while others live: one node has nothing to keep it for.
  if (c.smDurable && !c.redisUrl) throw new ConfigError('XMPP_SM_DURABLE needs a cluster (XMPP_REDIS_URL): on a single node nothing outlives the process');
  return { config: c, file };
}

/** XMPP_HTTP_TRUSTED_PROXIES as a list of addresses and CIDR blocks (net.BlockList). */
export function trustedProxiesOf(c: Pick<Config, 'httpTrustedProxies'>): BlockList {
  return addressList(c.httpTrustedProxies, 'XMPP_HTTP_TRUSTED_PROXIES');
}

/** XMPP_PER_IP_EXEMPT as a list of addresses and CIDR blocks (net.BlockList). */
export function perIpExemptOf(c: Pick<Config, 'perIpExempt'>): BlockList {
  return addressList(c.perIpExempt, 'XMPP_PER_IP_EXEMPT');
}

/** XMPP_PROXY_PROTOCOL_FROM as a list of addresses and CIDR blocks (net.BlockList). */
export function proxyProtocolFromOf(c: Pick<Config, 'proxyProtocolFrom'>): BlockList {
  return addressList(c.proxyProtocolFrom, 'XMPP_PROXY_PROTOCOL_FROM');
}

/** XMPP_REGISTRATION_RATE as a burst and a period: undefined for no limit. */
export function registrationRateOf(c: Pick<Config, 'registrationRate'>): { burst: number; periodMs: number } | undefined {
  const v = c.registrationRate.trim();
  if (v === '0' || v === '') return undefined;
  const m = /^(\d{1,6})\s*\/\s*(\d{1,7})$/.exec(v);
  if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new ConfigError(`XMPP_REGISTRATION_RATE must be 'N/SECONDS' (3/60: three at once, then three a minute) or 0, got ${JSON.stringify(c.registrationRate)}`);
  return { burst: Number(m[1]), periodMs: Number(m[2]) * 1000 };
}

/** XMPP_METRICS as a list of addresses and CIDR blocks (net.BlockList); empty when /metrics is not served. */
export function metricsAllowedOf(c: Pick<Config, 'metrics'>): BlockList {
  return addressList(c.metrics, 'XMPP_METRICS');
}

/** A comma-separated list of IP addresses and CIDR blocks, as a net.BlockList; throws a ConfigError naming `env`. */
function addressList(value: string, env: string): BlockList {
  const list = new BlockList();
  for (const raw of value.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const slash = entry.indexOf('/');
    const address = slash < 0 ? entry : entry.slice(0, slash);
    const family = isIP(address);
    const bits = slash < 0 ? undefined : /^\d{1,3}$/.test(entry.slice(slash + 1)) ? Number(entry.slice(slash + 1)) : NaN;
    if (family === 0 || (bits !== undefined && !(bits <= (family === 4 ? 32 : 128)))) throw new ConfigError(`${env} must list IP addresses or CIDR blocks (10.0.0.0/8, fd00::/8), got ${JSON.stringify(entry)}`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(address, type);
    else list.addSubnet(address, bits, type);
  }
  return list;
}

/** XMPP_HTTP_PUBLIC_URL checked: an https:// URL with no query or fragment, without its trailing slash; '' when not set. */
export function publicUrlOf(c: Pick<Config, 'httpPublicUrl'>): string {
  if (c.httpPublicUrl === '') return '';
  let url: URL;
  try {
    url = new URL(c.httpPublicUrl);
  } catch {
    throw new ConfigError(`XMPP_HTTP_PUBLIC_URL must be an https:// URL, got ${JSON.stringify(c.httpPublicUrl)}`);
  }
  if (url.protocol !== 'https:' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') throw new ConfigError(`XMPP_HTTP_PUBLIC_URL must be an https:// URL without query, fragment or credentials, got ${JSON.stringify(c.httpPublicUrl)}`);
  return `${url.origin}${url.pathname}`.replace(/\/+$/, '');
}

/** The domains of the services the server hosts itself (XEP-0060 pubsub...): served like its own to peer servers. */
export function hostedDomains(c: Pick<Config, 'pubsubDomain' | 'mucDomain' | 'uploadDomain'>): string[] {
  return [c.pubsubDomain, c.mucDomain, c.uploadDomain].filter((d) => d !== '');
}

/** One media type a file may be uploaded as (XMPP_UPLOAD_TYPES): 'image/png', or 'image/*' for the whole type. */
export interface MediaPattern {
  type: string;
  /** '*' for any. */
  subtype: string;
}

/** RFC 9110 §5.6.2: a token (the characters a media type's type and subtype are made of). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** XMPP_UPLOAD_TYPES as a list (lowercase); empty for any type. */
export function uploadTypesOf(c: Pick<Config, 'uploadTypes'>): MediaPattern[] {
  if (c.uploadTypes.trim() === '') return [];
  return c.uploadTypes.split(',').map((raw) => {
    const entry = raw.trim().toLowerCase();
    const slash = entry.indexOf('/');
    const type = entry.slice(0, slash);
    const subtype = entry.slice(slash + 1);
    if (slash < 0 || !TOKEN.test(type) || type === '*' || !(subtype === '*' || TOKEN.test(subtype))) throw new ConfigError(`XMPP_UPLOAD_TYPES must list media types ('image/png') or whole types ('image/*'), comma-separated, got ${JSON.stringify(raw.trim())}`);
    return { type, subtype };
  });
}

/** One external service (XEP-0215 §2): a STUN or TURN server. */
export interface ExternalService {
  type: 'stun' | 'stuns' | 'turn' | 'turns';
  host: string;
  port: number;
  transport: 'udp' | 'tcp';
}

/**
 * XMPP_EXTDISCO_SERVICES as a list: STUN and TURN URIs (RFC 7064 §3.1,
 * RFC 7065 §3.1): the port defaults to 3478 (5349 for the TLS schemes), the
 * transport to UDP (TCP for the TLS schemes, which have no other).
 */
export function extdiscoServicesOf(c: Pick<Config, 'extdiscoServices'>): ExternalService[] {
  if (c.extdiscoServices.trim() === '') return [];
  return c.extdiscoServices.split(',').map((raw) => {
    const entry = raw.trim();
    const m = /^(stuns?|turns?):(\[[0-9A-Fa-f:.]+\]|[^:?[\]\s/@]+)(?::(\d{1,5}))?(?:\?transport=(udp|tcp))?$/i.exec(entry);
    const bad = () => new ConfigError(`XMPP_EXTDISCO_SERVICES must list 'stun:host[:port]', 'turn:host[:port][?transport=udp|tcp]', 'stuns:' or 'turns:' URIs, comma-separated, got ${JSON.stringify(entry)}`);
    if (!m) throw bad();
    const type = m[1].toLowerCase() as ExternalService['type'];
    const secure = type.endsWith('s');
    const port = m[3] === undefined ? (secure ? 5349 : 3478) : Number(m[3]);
    const transport = (m[4]?.toLowerCase() ?? (secure ? 'tcp' : 'udp')) as ExternalService['transport'];
    // RFC 7064 §3.1: a stun URI has no transport; RFC 7065 §3.1: turns runs over TLS, on TCP only.
    if (port < 1 || port > 65535 || (m[4] !== undefined && type.startsWith('stun')) || (secure && transport === 'udp')) throw bad();
    return { type, host: m[2].replace(/^\[|\]$/g, ''), port, transport };
  });
}

/** What `config` prints after the settings: where files are looked for. */
export function pathRules(): string[] {
  return [
    `Relative paths (${[...SETTINGS.filter((s) => s.path).map((s) => s.env), 'XMPP_CONFIG'].join(', ')}) are resolved against ${ROOT},`,
    'the installation directory, whatever the working directory; those set in a config file against',
    `the file's directory. The config file is XMPP_CONFIG, else ${DEFAULT_CONFIG_FILE} when it exists.`,
    `XMPP_DATA_DIR defaults to ${join(ROOT, 'data')}.`,
  ];
}

/**
 * XMPP_COMPONENTS as a map from component domain (normalised) to its
 * handshake secret; throws a ConfigError for a malformed list, a domain
 * that is not one, the server's own domain, or an empty secret.
 */
export function componentsOf(c: Pick<Config, 'components' | 'domain'>): Map<string, string> {
  const out = new Map<string, string>();
  if (c.components.trim() === '') return out;
  for (const part of c.components.split(',')) {
    const eq = part.indexOf('=');
    const name = eq === -1 ? '' : part.slice(0, eq).trim();
    const secret = eq === -1 ? '' : part.slice(eq + 1);
    if (!name || !secret) throw new ConfigError(`XMPP_COMPONENTS must be 'domain=secret,...', got ${JSON.stringify(part.trim())}`);
    let domain: string;
    try {
      domain = normalizeDomain(name);
    } catch (err) {
      throw new ConfigError(`XMPP_COMPONENTS: ${JSON.stringify(name)} is not a domain: ${(err as Error).message}`);
    }
    if (domain === c.domain) throw new ConfigError(`XMPP_COMPONENTS: ${domain} is the server's own domain`);
    out.set(domain, secret);
  }
  return out;
}

/**
 * XMPP_ADMINS as a set of normalised bare JIDs; throws a ConfigError for an
 * entry that is not a bare JID of an account of this domain.
 */
export function adminsOf(c: Pick<Config, 'admins' | 'domain'>): Set<string> {
  const out = new Set<string>();
  if (c.admins.trim() === '') return out;
  for (const part of c.admins.split(',')) {
    const raw = part.trim();
    let j: Jid;
    try {
      j = parseJid(raw);
    } catch (err) {
      throw new ConfigError(`XMPP_ADMINS: ${JSON.stringify(raw)} is not a JID: ${(err as Error).message}`);
    }
    if (!j.local || j.resource || j.domain !== c.domain) throw new ConfigError(`XMPP_ADMINS must list bare JIDs of accounts of ${c.domain} (user@${c.domain}), got ${JSON.stringify(raw)}`);
    out.add(`${j.local}@${j.domain}`);
  }
  return out;
}

/** A peer server's address (XMPP_S2S_HOSTS, or what DNS gave). */
export interface PeerAddress {
  host: string;
  port: number;
  /** XEP-0368: TLS from the first byte (an _xmpps-server SRV record). */
  directTls?: boolean;
}

/**
 * XMPP_S2S_HOSTS as a map from peer domain (normalised) to its address;
 * throws a ConfigError for a malformed list. A host may be an IPv6 address
 * in brackets.
 */
export function s2sHostsOf(c: Pick<Config, 's2sHosts'>): Map<string, PeerAddress> {
  const out = new Map<string, PeerAddress>();
  if (c.s2sHosts.trim() === '') return out;
  for (const part of c.s2sHosts.split(',')) {
    const m = /^\s*([^=\s]+)\s*=\s*(\[[0-9A-Fa-f:.]+\]|[^:\s[\]]+):(\d{1,5})\s*$/.exec(part);
    if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) throw new ConfigError(`XMPP_S2S_HOSTS must be 'domain=host:port,...', got ${JSON.stringify(part.trim())}`);
    let domain: string;
    try {
      domain = normalizeDomain(m[1]);
    } catch (err) {
      throw new ConfigError(`XMPP_S2S_HOSTS: ${JSON.stringify(m[1])} is not a domain: ${(err as Error).message}`);
    }
    out.set(domain, { host: m[2].replace(/^\[|\]$/g, ''), port: Number(m[3]) });
  }
  return out;
}

/** XMPP_S2S_DNS_SERVERS as a list for Resolver.setServers; throws a ConfigError for an entry that is no address. */
export function dnsServersOf(c: Pick<Config, 's2sDnsServers'>): string[] {
  if (c.s2sDnsServers.trim() === '') return [];
  return c.s2sDnsServers.split(',').map((part) => {
    const p = part.trim();
    const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)|([0-9A-Fa-f:]+))(?::(\d{1,5}))?$/.exec(p);
    const ip = m ? (m[1] ?? m[2] ?? m[3]) : undefined;
    if (!m || !ip || !isIP(ip) || (m[4] !== undefined && (Number(m[4]) < 1 || Number(m[4]) > 65535)) || (m[3] !== undefined && m[4] !== undefined)) {
      throw new ConfigError(`XMPP_S2S_DNS_SERVERS must be 'ip,ip:port,[ipv6]:port', got ${JSON.stringify(p)}`);
    }
    return p;
  });
}
