// The one description of a cluster, shared by the local launcher
// (cluster/launch.ts) and the container set-up (docker-compose.yml,
// cluster/Dockerfile, cluster/haproxy.cfg). The launcher runs what this file
// says; test/cluster/compose.test.ts checks that the compose file, the
// Dockerfile and the checked-in HAProxy configuration say the same.
//
// Node environment: cluster/node.env (KEY=VALUE), read by compose through
// env_file and by the launcher through nodeEnv() below.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The repository root (the image's WORKDIR /app holds the same layout). */
export const ROOT = join(import.meta.dirname, '..');

/** The command that runs one node, relative to ROOT (the image's CMD). */
export const NODE_COMMAND = ['node', 'src/main.ts', 'start'] as const;
/** The command that creates the shared certificate if it is missing. */
export const CERTS_COMMAND = ['node', 'cluster/certs.ts'] as const;
/** The container health check of a node. */
export const HEALTHCHECK_COMMAND = ['node', 'cluster/healthcheck.ts'] as const;

/** The node environment file, relative to ROOT. */
export const NODE_ENV_FILE = 'cluster/node.env';

/** Client ports: on every node inside its container, and on the load balancer. */
export const C2S_PORT = 5222;
export const TLS_PORT = 5223;
/**
 * Peer servers (RFC 6120 s2s): on every node, and on the load balancer. Any
 * node may take an incoming stream, and a dialback verification request may
 * land on any node (the keys come from a secret every node shares), so peers
 * reach the cluster through the balancer like clients do.
 */
export const S2S_PORT = 5269;
/**
 * Web clients (WebSocket, XEP-0156 host-meta) over HTTPS: on every node, and
 * on the load balancer, which passes TLS through as it does for direct TLS.
 */
export const HTTPS_PORT = 5443;

/** Names in docker-compose.yml. */
export const SERVICES = { redis: 'redis', postgres: 'postgres', certs: 'certs', node: 'xmpp', lb: 'lb' } as const;
/** Where the shared certificate lives in the containers (a named volume). */
export const CERT_DIR = '/certs';
export const CERT_FILE = 'cluster.crt';
export const KEY_FILE = 'cluster.key';
/** Data directory of a node in its container (an anonymous volume per replica). */
export const DATA_DIR = '/data';
/**
 * Uploaded files (XEP-0363, XMPP_UPLOAD_DIR): one directory every node
 * shares, since any node may take a file's PUT and any its GET (a named
 * volume in compose; one directory of the launcher's for its nodes).
 */
export const UPLOAD_DIR = '/uploads';

/** Redis: the arguments after `redis-server` (persistence: append-only file). */
export const REDIS_PORT = 6379;
export const REDIS_ARGS = ['--appendonly', 'yes'] as const;
export const redisUrl = (host: string, port: number): string => `redis://${host}:${port}`;

/**
 * PostgreSQL: the nodes' accounts, rosters and offline messages (a cluster
 * requires it). Its role and database are both named xmpp; compose gives the
 * role a password (the server is not published outside compose's network),
 * the launcher none (trust, on 127.0.0.1 only).
 */
export const POSTGRES_PORT = 5432;
export const POSTGRES_USER = 'xmpp';
export const POSTGRES_DB = 'xmpp';
export const postgresUrl = (host: string, port: number, password?: string): string =>
  `postgres://${POSTGRES_USER}${password === undefined ? '' : `:${encodeURIComponent(password)}`}@${host}:${port}/${POSTGRES_DB}`;

/** How many replicas of the node service the compose load balancer can reach. */
export const MAX_REPLICAS = 10;
/** HAProxy's configuration in the official image. */
export const HAPROXY_CFG_PATH = '/usr/local/etc/haproxy/haproxy.cfg';

/**
 * Settings the launcher sets per node itself because they differ when all
 * nodes share one machine; every other setting comes from node.env.
 */
export const LAUNCHER_OVERRIDES = [
  'XMPP_NODE_ID', 'XMPP_REDIS_URL', 'XMPP_DATABASE_URL', 'XMPP_BIND_HOST', 'XMPP_C2S_PORT', 'XMPP_TLS_PORT', 'XMPP_S2S_PORT', 'XMPP_HTTPS_PORT', 'XMPP_HTTP_PUBLIC_URL', 'XMPP_DATA_DIR', 'XMPP_UPLOAD_DIR', 'XMPP_TLS_CERT', 'XMPP_TLS_KEY', 'XMPP_PROXY_PROTOCOL_FROM',
] as const;

/**
 * Parses an environment file. Accepts only the subset on which docker compose
 * and this parser agree: `KEY=VALUE` lines, `#` comment lines and blank
 * lines; no quotes, no `export`, no trailing comments, no surrounding spaces.
 */
export function parseEnvFile(text: string, name = 'env file'): Record<string, string> {
  const out: Record<string, string> = {};
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    const bad = (why: string) => new Error(`${name} line ${i + 1}: ${why}: ${JSON.stringify(line)}`);
    if (!m) throw bad('expected KEY=VALUE');
    const [, key, value] = m;
    if (/["'`]/.test(value)) throw bad('quotes are read differently by compose and shells; write the value bare');
    if (/\s#/.test(value)) throw bad('no trailing comments');
    if (value !== value.trim()) throw bad('no spaces around the value');
    if (key in out) throw bad(`${key} set twice`);
    out[key] = value;
  });
  return out;
}

/** The node environment from cluster/node.env. */
export function nodeEnv(): Record<string, string> {
  return parseEnvFile(readFileSync(join(ROOT, NODE_ENV_FILE), 'utf8'), NODE_ENV_FILE);
}

/** One node as the launcher's load balancer sees it. */
export interface StaticServer {
  name: string;
  host: string;
  c2sPort: number;
  tlsPort: number;
  /** Undefined with federation off (XMPP_S2S=false). */
  s2sPort?: number;
  /** Undefined without web clients (XMPP_HTTPS_PORT unset). */
  httpsPort?: number;
}

export interface HaproxyOptions {
  /** Address the frontends bind to; '' for every address. */
  bind: string;
  c2sPort: number;
  tlsPort: number;
  /** Undefined: no s2s frontend (federation off). */
  s2sPort?: number;
  /** Undefined: no HTTPS frontend (no web clients). */
  httpsPort?: number;
  /** Fixed servers (launcher), or the replicas of a compose service found through Docker's DNS. */
  servers: { static: StaticServer[] } | { dns: { service: string; max: number } };
}

/**
 * Health check, with web clients on: the node's /readyz on its HTTPS port,
 * for every backend. A node that answers 200 accepts connections and
 * reaches Redis and PostgreSQL; one shutting down, cut off from either, or
 * fenced answers 503 and is taken out before its clients notice.
 */
const READYZ = ['option httpchk GET /readyz', 'http-check expect status 200'];
/** Without them: open a stream (client or server namespace) and expect the node's stream header back (the node lives, nothing more). */
const streamHeader = (ns: 'jabber:client' | 'jabber:server') =>
  `<stream:stream xmlns='${ns}' xmlns:stream='http://etherx.jabber.org/streams' to='\${XMPP_DOMAIN}' version='1.0'>`;
// An explicit `tcp-check connect` does not take the server line's check-send-proxy: it says send-proxy itself.
const streamCheck = (ns: 'jabber:client' | 'jabber:server') => ['option tcp-check', 'tcp-check connect send-proxy', `tcp-check send "${streamHeader(ns)}"`, 'tcp-check expect string "<stream:stream"'];
const tlsStreamCheck = (ns: 'jabber:client' | 'jabber:server') => ['option tcp-check', 'tcp-check connect send-proxy ssl', `tcp-check send "${streamHeader(ns)}"`, 'tcp-check expect string "<stream:stream"'];

/** Load balancer behaviour, one place for both set-ups. */
export const HAPROXY_DEFAULTS = [
  'mode tcp',
  'log global',
  'option tcplog',
  'option dontlognull',
  // Sessions are long-lived: spread them by count, not by turns.
  'balance leastconn',
  // A refused connection is retried once, on another node.
  'retries 1',
  'option redispatch 1',
  'timeout connect 5s',
  // XMPP connections live for hours; the nodes close idle ones themselves
  // (XMPP_IDLE_TIMEOUT_MS), so the proxy's own timeouts are well above that.
  'timeout client 1h',
  'timeout server 1h',
  'timeout tunnel 1h',
  'timeout client-fin 30s',
  'timeout server-fin 30s',
  'timeout check 5s',
  // Checked every 2 s: down after 2 failures, up after 2 successes. A real
  // connection that fails marks the node down at once (and is retried on
  // another one). Sessions already on a node marked down are left alone: a
  // node that died has closed them anyway, and a slow check must not cut a
  // whole node's clients.
  'default-server inter 2s fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down',
];

/** The HAProxy configuration for the launcher (static servers) or for compose (DNS). */
export function haproxyConfig(o: HaproxyOptions): string {
  const lines: string[] = [
    '# Generated by haproxyConfig() in cluster/spec.ts; do not edit by hand.',
    '# Compose version: `npm run -s cluster -- --write-compose-haproxy` rewrites it',
    '# (test/cluster/compose.test.ts checks that it is up to date).',
    '# XMPP_DOMAIN comes from the environment (cluster/node.env) for the health checks that open a stream.',
    'global',
    '    log stdout format raw local0 info',
    '',
    'defaults',
    ...HAPROXY_DEFAULTS.map((l) => `    ${l}`),
    '',
  ];
  if ('dns' in o.servers) {
    lines.push(
      '# Docker\'s embedded DNS: the service name resolves to every replica.',
      'resolvers docker',
      '    nameserver dns 127.0.0.11:53',
      '    accepted_payload_size 8192',
      '    hold valid 5s',
      '    hold obsolete 5s',
      '',
    );
  }
  // Every pair passes TCP through: STARTTLS (clients, peer servers) happens
  // end to end between the peer and the node. Each connection to a node
  // begins with a PROXY protocol header naming the client (send-proxy-v2),
  // its health checks' too (check-send-proxy: they go to another port than
  // the server's, which HAProxy would otherwise send them without): the
  // nodes list the balancer in XMPP_PROXY_PROTOCOL_FROM, so that their
  // per-address limits and logs see the clients.
  // Web clients' HTTPS passes through too (TLS ends on the node, with the
  // cluster's certificate).
  // Every node has an HTTPS port when the balancer has one (node.env sets it for all).
  const readyz = o.httpsPort !== undefined && ('dns' in o.servers || o.servers.static.every((s) => s.httpsPort !== undefined));
  const all: { name: string; port: number | undefined; check: string[]; nodePort: (s: StaticServer) => number | undefined; dnsPort: number }[] = [
    { name: 'xmpp_c2s', port: o.c2sPort, check: streamCheck('jabber:client'), nodePort: (s) => s.c2sPort, dnsPort: C2S_PORT },
    { name: 'xmpp_tls', port: o.tlsPort, check: tlsStreamCheck('jabber:client'), nodePort: (s) => s.tlsPort, dnsPort: TLS_PORT },
    { name: 'xmpp_s2s', port: o.s2sPort, check: streamCheck('jabber:server'), nodePort: (s) => s.s2sPort, dnsPort: S2S_PORT },
    { name: 'xmpp_https', port: o.httpsPort, check: [], nodePort: (s) => s.httpsPort, dnsPort: HTTPS_PORT },
  ];
  const backends = all.filter((b) => b.port !== undefined);
  for (const b of backends) {
    lines.push(`frontend ${b.name}`, `    bind ${o.bind}:${b.port}`, `    default_backend ${b.name}`, '');
  }
  for (const b of backends) {
    // Direct TLS (XEP-0368) passes through as TCP; only a check speaks TLS (the node's certificate is not verified: it is the node's health that counts).
    lines.push(`backend ${b.name}`, ...(readyz ? READYZ : b.check).map((l) => `    ${l}`));
    const check = (healthPort: number | undefined) => `send-proxy-v2 ${readyz ? `check port ${healthPort} check-ssl verify none check-send-proxy` : b.name === 'xmpp_tls' ? 'check verify none' : 'check'}`;
    if ('dns' in o.servers) {
      const { service, max } = o.servers.dns;
      lines.push(`    server-template ${service} 1-${max} ${service}:${b.dnsPort} ${check(HTTPS_PORT)} resolvers docker resolve-prefer ipv4 init-addr none`);
    } else {
      for (const s of o.servers.static) {
        const port = b.nodePort(s);
        if (port === undefined) throw new Error(`${s.name} has no port for ${b.name}`);
        lines.push(`    server ${s.name} ${s.host}:${port} ${check(s.httpsPort)}`);
      }
    }
    lines.push('');
  }
  return lines.join('\n');
}

/** The checked-in cluster/haproxy.cfg, used by the compose load balancer. */
export function composeHaproxyConfig(): string {
  return haproxyConfig({ bind: '', c2sPort: C2S_PORT, tlsPort: TLS_PORT, s2sPort: S2S_PORT, httpsPort: HTTPS_PORT, servers: { dns: { service: SERVICES.node, max: MAX_REPLICAS } } });
}
