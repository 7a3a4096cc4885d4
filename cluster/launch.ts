// A local cluster on this machine, for development and tests: one
// redis-server (what the nodes share that may be lost), one PostgreSQL (their
// accounts, rosters and offline messages), N nodes on distinct ports, and
// HAProxy in front of them with health checks. The nodes run the command and environment of cluster/spec.ts
// and cluster/node.env, the same ones docker-compose.yml uses.
//
//   npm run cluster -- --nodes 3            (see --help)
//
// Ctrl-C (SIGINT), SIGTERM or SIGHUP stops everything: the nodes first (they
// close their streams with system-shutdown and leave the cluster), then
// HAProxy, Redis and PostgreSQL; then it exits with code 0.
import { spawn, execFile, execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, chownSync, constants, createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import {
  ROOT, NODE_COMMAND, REDIS_ARGS, CERT_FILE, KEY_FILE, LAUNCHER_OVERRIDES, POSTGRES_USER, POSTGRES_DB,
  nodeEnv, redisUrl, postgresUrl, haproxyConfig, composeHaproxyConfig,
} from './spec.ts';
import { ensureCertificate } from './certs.ts';
import { probe, probeHttps } from './healthcheck.ts';

const HOST = '127.0.0.1';

export interface LaunchOptions {
  /** Number of nodes (default 3). */
  nodes?: number;
  /** Load balancer ports (defaults 5222, 5223 and 5269); 0 picks a free port. */
  c2sPort?: number;
  tlsPort?: number;
  /** For peer servers (federation). */
  s2sPort?: number;
  /** For web clients (WebSocket over HTTPS; default 5443). */
  httpsPort?: number;
  /**
   * Node i (from 0) listens on portBase+4i (STARTTLS), portBase+4i+1 (direct
   * TLS), portBase+4i+2 (peer servers) and portBase+4i+3 (HTTPS); 0
   * (default): free ports.
   */
  portBase?: number;
  /** Redis port; 0 (default) picks a free port. */
  redisPort?: number;
  /** PostgreSQL port; 0 (default) picks a free port. */
  postgresPort?: number;
  /** Run directory (certificate, Redis and PostgreSQL data, node data, logs), kept after stop; default: a temporary one, removed on stop. */
  dir?: string;
  /** Settings for every node on top of cluster/node.env (not the per-node ones the launcher sets). */
  env?: Record<string, string>;
  /** Bound on starting everything, in ms (default 30000). */
  startTimeoutMs?: number;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ClusterProcess {
  name: string;
  pid: number;
  /** Its stdout and stderr, in the run directory. */
  logFile: string;
  /** Resolves when the process has exited. */
  exited: Promise<Exit>;
  readonly running: boolean;
  kill(signal?: NodeJS.Signals): void;
}

export interface ClusterNode extends ClusterProcess {
  c2sPort: number;
  tlsPort: number;
  /** Undefined with federation off (XMPP_S2S=false). */
  s2sPort: number | undefined;
  /** Undefined without web clients (XMPP_HTTPS_PORT empty). */
  httpsPort: number | undefined;
  dataDir: string;
}

export interface Cluster {
  dir: string;
  domain: string;
  /** Load balancer: STARTTLS and direct-TLS ports on 127.0.0.1. */
  c2sPort: number;
  tlsPort: number;
  /** Load balancer: the port for peer servers; undefined with federation off (XMPP_S2S=false). */
  s2sPort: number | undefined;
  /** Load balancer: the web clients' HTTPS port (wss://.../xmpp-websocket); undefined without them (XMPP_HTTPS_PORT empty). */
  httpsPort: number | undefined;
  redisUrl: string;
  /** The nodes' XMPP_DATABASE_URL. */
  databaseUrl: string;
  certFile: string;
  haproxyConfigFile: string;
  nodes: ClusterNode[];
  redis: ClusterProcess;
  postgres: ClusterProcess;
  haproxy: ClusterProcess;
  /** Stops everything (nodes first, then HAProxy, Redis and PostgreSQL); safe to call more than once. */
  stop(): Promise<void>;
}

export class LaunchError extends Error {
  override name = 'LaunchError';
}

const TOOLS: Record<string, string> = { 'redis-server': 'redis-server', haproxy: 'haproxy', openssl: 'openssl' };

function onPath(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/**
 * The directory holding PostgreSQL's initdb and postgres: on PATH, else
 * Debian's (the newest of /usr/lib/postgresql/<version>/bin, which the
 * postgresql package does not put on PATH); undefined when neither has them.
 */
export function postgresBin(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    try {
      for (const cmd of ['initdb', 'postgres']) accessSync(join(dir, cmd), constants.X_OK);
      return dir;
    } catch {
      // not both in this directory
    }
  }
  try {
    const versions = readdirSync('/usr/lib/postgresql').filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    return versions.length > 0 ? join('/usr/lib/postgresql', versions[0], 'bin') : undefined;
  } catch {
    return undefined;
  }
}

/** Throws a LaunchError naming what to install when a tool is missing; installs nothing. */
export function checkTools(): void {
  const missing = Object.keys(TOOLS).filter((t) => !onPath(t));
  if (postgresBin() === undefined) missing.push('PostgreSQL (initdb, postgres)');
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map((t) => TOOLS[t] ?? 'postgresql'))].join(' ');
    throw new LaunchError(`missing on PATH: ${missing.join(', ')}. On Debian or Ubuntu: sudo apt-get install ${pkgs}`);
  }
}

export async function freePort(): Promise<number> {
  // Below the kernel's ephemeral range: a port the kernel hands out (a
  // listener on port 0, the local end of an outgoing connection) cannot
  // take it between now and when HAProxy or Redis binds it.
  const [low] = ephemeralRange();
  if (low > 2048) {
    for (let i = 0; i < 50; i++) {
      const port = 1024 + Math.floor(Math.random() * (low - 1024));
      if (await canListen(port)) return port;
    }
  }
  const srv = net.createServer();
  srv.listen(0, HOST);
  await once(srv, 'listening');
  const { port } = srv.address() as net.AddressInfo;
  srv.close();
  await once(srv, 'close');
  return port;
}

/** The kernel's ephemeral port range (Linux), or the IANA one. */
function ephemeralRange(): [number, number] {
  try {
    const [a, b] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (a > 0 && b >= a) return [a, b];
  } catch {
    // not Linux
  }
  return [49152, 65535];
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

/** Throws unless `port` can be listened on (HAProxy's own error would come only once it is running). */
async function assertFree(port: number, flag: string): Promise<void> {
  const srv = net.createServer();
  try {
    srv.listen(port, HOST);
    await once(srv, 'listening');
  } catch (err) {
    throw new LaunchError(`port ${port} is not available (${(err as NodeJS.ErrnoException).code}): is a server already running there? ${flag} picks another`);
  } finally {
    srv.close();
  }
}

/** A child process in its own process group (a terminal's Ctrl-C reaches only the launcher, which stops them in order). */
class Child implements ClusterProcess {
  readonly name: string;
  readonly logFile: string;
  readonly proc: ChildProcess;
  readonly exited: Promise<Exit>;
  private done = false;
  /** The last lines of output, for error messages. */
  tail = '';

  constructor(name: string, cmd: string, args: string[], opts: { env: NodeJS.ProcessEnv; cwd: string; logFile: string; user?: { uid: number; gid: number } }) {
    this.name = name;
    this.logFile = opts.logFile;
    const log: WriteStream = createWriteStream(opts.logFile, { flags: 'a' });
    this.proc = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts.user });
    const keep = (d: Buffer) => {
      log.write(d);
      this.tail = (this.tail + d.toString()).slice(-4000);
    };
    this.proc.stdout!.on('data', keep);
    this.proc.stderr!.on('data', keep);
    this.exited = new Promise((res) => {
      this.proc.once('error', (err) => {
        this.tail += `\n${err.message}`;
        this.done = true;
        log.end();
        res({ code: null, signal: null });
      });
      this.proc.once('exit', (code, signal) => {
        this.done = true;
        log.end();
        res({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get running(): boolean {
    return !this.done;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (!this.done) this.proc.kill(signal);
  }

  /** Resolves with the first output line that `match` accepts; rejects if the process exits first. */
  waitForLine<T>(match: (line: string) => T | undefined, what: string): Promise<T> {
    return new Promise((res, rej) => {
      let partial = '';
      const streams = [this.proc.stdout!, this.proc.stderr!];
      const onData = (d: Buffer) => {
        const lines = (partial + d.toString()).split('\n');
        partial = lines.pop()!;
        for (const line of lines) {
          const v = match(line);
          if (v !== undefined) {
            cleanup();
            res(v);
            return;
          }
        }
      };
      const onExit = () => {
        cleanup();
        rej(new LaunchError(`${this.name} exited before ${what}; its output (${this.logFile}):\n${this.tail.trim()}`));
      };
      const cleanup = () => {
        for (const s of streams) s.off('data', onData);
        this.proc.off('exit', onExit);
      };
      for (const s of streams) s.on('data', onData);
      this.proc.once('exit', onExit);
      if (this.done) onExit();
    });
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs: number): Promise<Exit> {
    this.kill('SIGTERM');
    const timer = setTimeout(() => this.kill('SIGKILL'), graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }
}

class NodeChild extends Child implements ClusterNode {
  c2sPort = 0;
  tlsPort = 0;
  s2sPort: number | undefined = undefined;
  httpsPort: number | undefined = undefined;
  dataDir = '';
}

/** Rejects after `ms` with `what` in the message, unless `p` settles first. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new LaunchError(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Probes through the load balancer until it forwards to a node (HAProxy has no readiness signal). */
async function untilForwarding(haproxy: Child, port: number, domain: string, kind: 'c2s' | 'tls' | 's2s' | 'https'): Promise<void> {
  for (;;) {
    if (!haproxy.running) throw new LaunchError(`haproxy exited; its output (${haproxy.logFile}):\n${haproxy.tail.trim()}`);
    try {
      if (kind === 'https') await probeHttps(port, domain, 2000);
      else await probe({ port, domain, tls: kind === 'tls', ns: kind === 's2s' ? 'jabber:server' : 'jabber:client', timeoutMs: 2000 });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw err;
    }
    // Not bound yet: HAProxy is still reading its configuration.
    await new Promise((r) => setTimeout(r, 50));
  }
}

const execFileP = promisify(execFile);

/** redis-server's arguments: this machine's port and directory, then the spec's (persistence). */
export function redisArgs(port: number, dir: string): string[] {
  return ['--port', String(port), '--bind', HOST, '--dir', dir, ...REDIS_ARGS];
}

/**
 * PostgreSQL refuses to run as root: then it runs as the `postgres` user
 * (Debian's package creates it), which must own its data directory and be
 * able to reach it.
 */
function postgresUser(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  try {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    throw new LaunchError('PostgreSQL does not run as root and there is no postgres user to run it as: run the launcher as another user');
  }
}

/**
 * PostgreSQL in `dataDir` (initdb the first time: role and database xmpp,
 * trust authentication, UTF8), on 127.0.0.1 only and without a Unix socket;
 * resolves once it accepts connections and the database exists.
 */
async function startPostgres(o: { dataDir: string; port: number; env: NodeJS.ProcessEnv; logFile: string; timeoutMs: number; started: (c: Child) => void }): Promise<void> {
  const bin = postgresBin()!;
  const user = postgresUser();
  const fresh = !existsSync(join(o.dataDir, 'PG_VERSION'));
  if (fresh) {
    mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
    if (user) chownSync(o.dataDir, user.uid, user.gid);
    try {
      await execFileP(join(bin, 'initdb'), ['-D', o.dataDir, '-U', POSTGRES_USER, '--auth=trust', '-E', 'UTF8', '--locale=C'], { env: o.env, cwd: o.dataDir, ...user });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new LaunchError(`initdb failed in ${o.dataDir}: ${(e.stderr || e.message).trim()}`);
    }
  }
  const child = new Child('postgres', join(bin, 'postgres'), ['-D', o.dataDir, '-p', String(o.port), '-h', HOST, '-k', ''], { env: o.env, cwd: o.dataDir, logFile: o.logFile, user });
  o.started(child);
  await within(child.waitForLine((l) => (/database system is ready to accept connections/.test(l) ? true : undefined), 'being ready'), o.timeoutMs, 'postgres');
  const { default: pg } = await import('pg');
  const admin = new pg.Client({ connectionString: `postgres://${POSTGRES_USER}@${HOST}:${o.port}/postgres` });
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [POSTGRES_DB]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${POSTGRES_DB}`);
  } finally {
    await admin.end();
  }
}

export interface NodeProcessInput {
  /** From 0. */
  index: number;
  dir: string;
  redisUrl: string;
  databaseUrl: string;
  certFile: string;
  keyFile: string;
  /** 0: the node picks free ports (and logs them). */
  portBase: number;
  /** cluster/node.env plus the caller's settings. */
  shared: Record<string, string>;
  /** The launcher's own environment without XMPP_* settings. */
  inherited?: Record<string, string | undefined>;
  /** The load balancer's HTTPS port, which host-meta announces (XMPP_HTTP_PUBLIC_URL); undefined without web clients. */
  publicHttpsPort?: number;
}

/**
 * How the launcher runs node `index`: NODE_COMMAND from the spec, with this
 * Node.js for `node`, and the shared environment plus the per-node settings
 * of LAUNCHER_OVERRIDES.
 */
export function nodeProcess(o: NodeProcessInput): { id: string; command: string; args: string[]; env: Record<string, string>; cwd: string } {
  const id = `node-${o.index + 1}`;
  const dataDir = join(o.dir, id);
  const [node, main, ...args] = NODE_COMMAND;
  if (node !== 'node') throw new LaunchError(`cannot run ${NODE_COMMAND.join(' ')}`);
  const perNode: Record<(typeof LAUNCHER_OVERRIDES)[number], string> = {
    XMPP_NODE_ID: id,
    XMPP_REDIS_URL: o.redisUrl,
    XMPP_DATABASE_URL: o.databaseUrl,
    XMPP_BIND_HOST: HOST,
    XMPP_C2S_PORT: String(o.portBase ? o.portBase + 4 * o.index : 0),
    XMPP_TLS_PORT: String(o.portBase ? o.portBase + 4 * o.index + 1 : 0),
    XMPP_S2S_PORT: String(o.portBase ? o.portBase + 4 * o.index + 2 : 0),
    // Web clients when node.env (or --env) asks for them; host-meta names the balancer, not the node.
    XMPP_HTTPS_PORT: o.shared.XMPP_HTTPS_PORT === undefined || o.shared.XMPP_HTTPS_PORT === '' ? '' : String(o.portBase ? o.portBase + 4 * o.index + 3 : 0),
    XMPP_HTTP_PUBLIC_URL: o.publicHttpsPort === undefined ? '' : `https://${o.shared.XMPP_DOMAIN ?? 'localhost'}:${o.publicHttpsPort}`,
    XMPP_DATA_DIR: dataDir,
    // One directory for every node's uploads, as a shared volume would be.
    XMPP_UPLOAD_DIR: join(o.dir, 'uploads'),
    XMPP_TLS_CERT: o.certFile,
    XMPP_TLS_KEY: o.keyFile,
    // HAProxy reaches the nodes from 127.0.0.1, each connection beginning with a PROXY header (cluster/spec.ts).
    XMPP_PROXY_PROTOCOL_FROM: HOST,
  };
  const env = { ...(o.inherited ?? {}), ...o.shared, ...perNode } as Record<string, string>;
  // cwd is the data directory. The repository's xmpp.config.json, if any,
  // applies as it does to `npm start`; the environment set here wins over it.
  return { id, command: process.execPath, args: [join(ROOT, main), ...args], env, cwd: dataDir };
}

/** Starts a cluster; rejects (after stopping whatever it started) if any part fails to start. */
export async function launchCluster(options: LaunchOptions = {}): Promise<Cluster> {
  const count = options.nodes ?? 3;
  if (!Number.isSafeInteger(count) || count < 1) throw new LaunchError(`--nodes must be at least 1, got ${count}`);
  const overridden = Object.keys(options.env ?? {}).filter((k) => (LAUNCHER_OVERRIDES as readonly string[]).includes(k));
  if (overridden.length > 0) throw new LaunchError(`the launcher sets ${overridden.join(', ')} itself (see --help)`);
  checkTools();

  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const ownDir = options.dir === undefined;
  const dir = ownDir ? mkdtempSync(join(tmpdir(), 'xmpp-cluster-')) : resolve(options.dir!);
  mkdirSync(dir, { recursive: true });

  // Environment without the caller's XMPP_* settings: the cluster is node.env plus options.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('XMPP_')));
  const shared = { ...nodeEnv(), ...options.env };
  const domain = shared.XMPP_DOMAIN ?? 'localhost';
  const shutdownMs = Number(shared.XMPP_SHUTDOWN_TIMEOUT_MS ?? 5000);

  const children: Child[] = [];
  const killAll = () => {
    for (const c of children) c.kill('SIGKILL');
  };
  // If this process ends without stop() (an uncaught error), take the children along.
  process.on('exit', killAll);

  let stopping: Promise<void> | undefined;
  const nodes: NodeChild[] = [];
  let redis: Child | undefined;
  let postgres: Child | undefined;
  let haproxy: Child | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      // Nodes first, while Redis and PostgreSQL are up so that they leave the
      // cluster cleanly; the server exits on its own by the shutdown timeout plus 5 s.
      await Promise.all(nodes.map((n) => n.stop(shutdownMs + 6000)));
      await Promise.all([haproxy?.stop(5000), redis?.stop(10_000), postgres?.stop(10_000)]);
      process.off('exit', killAll);
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    })());

  try {
    const c2sPort = options.c2sPort === 0 ? await freePort() : (options.c2sPort ?? 5222);
    const tlsPort = options.tlsPort === 0 ? await freePort() : (options.tlsPort ?? 5223);
    // Checked even if the nodes turn out to run without federation: a node's
    // configuration file may turn it on or off, and only its log line says.
    let s2sPort: number | undefined = options.s2sPort === 0 ? await freePort() : (options.s2sPort ?? 5269);
    // Web clients, when the nodes serve them.
    const web = shared.XMPP_HTTPS_PORT !== undefined && shared.XMPP_HTTPS_PORT !== '';
    const httpsPort = !web ? undefined : options.httpsPort === 0 ? await freePort() : (options.httpsPort ?? 5443);
    await assertFree(c2sPort, '--c2s-port');
    await assertFree(tlsPort, '--tls-port');
    await assertFree(s2sPort, '--s2s-port');
    if (httpsPort !== undefined) await assertFree(httpsPort, '--https-port');
    const redisPort = options.redisPort ? options.redisPort : await freePort();
    const url = redisUrl(HOST, redisPort);
    const postgresPort = options.postgresPort ? options.postgresPort : await freePort();
    const databaseUrl = postgresUrl(HOST, postgresPort);

    const certFile = join(dir, 'certs', CERT_FILE);
    const keyFile = join(dir, 'certs', KEY_FILE);
    ensureCertificate({ cert: certFile, key: keyFile, domain });

    // Redis, with the persistence the compose file gives it (data in <dir>/redis).
    const redisDir = join(dir, 'redis');
    mkdirSync(redisDir, { recursive: true });
    redis = new Child('redis', 'redis-server', redisArgs(redisPort, redisDir), {
      env: inherited, cwd: redisDir, logFile: join(dir, 'redis.log'),
    });
    children.push(redis);
    await within(redis.waitForLine((l) => (/Ready to accept connections/.test(l) ? true : undefined), 'being ready'), startTimeoutMs, 'redis-server');

    // PostgreSQL, its data in <dir>/postgres (kept with --dir, as Redis's is).
    // As root it runs as postgres, which must be able to reach the directory.
    if (postgresUser()) chmodSync(dir, 0o711);
    await startPostgres({
      dataDir: join(dir, 'postgres'), port: postgresPort, env: inherited, logFile: join(dir, 'postgres.log'), timeoutMs: startTimeoutMs,
      started: (c) => {
        postgres = c;
        children.push(c);
      },
    });

    // The nodes: the spec's command, run by this Node.js, each in its own data directory.
    for (let i = 0; i < count; i++) {
      const spec = nodeProcess({ index: i, dir, redisUrl: url, databaseUrl, certFile, keyFile, portBase: options.portBase ?? 0, shared, inherited, publicHttpsPort: httpsPort });
      mkdirSync(spec.cwd, { recursive: true });
      const n = new NodeChild(spec.id, spec.command, spec.args, { env: spec.env, cwd: spec.cwd, logFile: join(dir, `${spec.id}.log`) });
      n.dataDir = spec.env.XMPP_DATA_DIR;
      children.push(n);
      nodes.push(n);
    }
    await within(
      Promise.all(
        nodes.map(async (n) => {
          const ports = await n.waitForLine((line) => {
            if (!line.includes('"listening"')) return undefined;
            try {
              const rec = JSON.parse(line) as { msg?: string; c2sPort?: number; tlsPort?: number; s2sPort?: number; httpsPort?: number };
              return rec.msg === 'listening' ? rec : undefined;
            } catch {
              return undefined;
            }
          }, 'listening');
          n.c2sPort = ports.c2sPort!;
          n.tlsPort = ports.tlsPort!;
          n.s2sPort = ports.s2sPort;
          n.httpsPort = ports.httpsPort;
        }),
      ),
      startTimeoutMs,
      'the nodes to listen',
    );
    const federated = nodes.filter((n) => n.s2sPort !== undefined).length;
    if (federated !== 0 && federated !== nodes.length) throw new LaunchError('some nodes listen for peer servers and some do not: XMPP_S2S must be the same on every node');
    if (federated === 0) s2sPort = undefined;

    // HAProxy in front, its configuration from the spec with these nodes' ports.
    const haproxyConfigFile = join(dir, 'haproxy.cfg');
    writeFileSync(
      haproxyConfigFile,
      haproxyConfig({ bind: HOST, c2sPort, tlsPort, s2sPort, httpsPort, servers: { static: nodes.map((n) => ({ name: n.name, host: HOST, c2sPort: n.c2sPort, tlsPort: n.tlsPort, s2sPort: n.s2sPort, httpsPort: n.httpsPort })) } }),
    );
    const haproxyEnv = { ...inherited, XMPP_DOMAIN: domain };
    try {
      await execFileP('haproxy', ['-c', '-q', '-f', haproxyConfigFile], { env: haproxyEnv });
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; message: string };
      throw new LaunchError(`haproxy rejects ${haproxyConfigFile}: ${(e.stderr || e.stdout || e.message).trim()}`);
    }
    haproxy = new Child('haproxy', 'haproxy', ['-db', '-f', haproxyConfigFile], { env: haproxyEnv, cwd: dir, logFile: join(dir, 'haproxy.log') });
    children.push(haproxy);
    const forwarded = [untilForwarding(haproxy, c2sPort, domain, 'c2s'), untilForwarding(haproxy, tlsPort, domain, 'tls')];
    if (s2sPort !== undefined) forwarded.push(untilForwarding(haproxy, s2sPort, domain, 's2s'));
    if (httpsPort !== undefined) forwarded.push(untilForwarding(haproxy, httpsPort, domain, 'https'));
    await within(Promise.all(forwarded), startTimeoutMs, `haproxy to forward on ${[c2sPort, tlsPort, s2sPort, httpsPort].filter((p) => p !== undefined).join(', ')}`);

    return { dir, domain, c2sPort, tlsPort, s2sPort, httpsPort, redisUrl: url, databaseUrl, certFile, haproxyConfigFile, nodes, redis, postgres: postgres!, haproxy, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

const HELP = `usage: npm run cluster -- [options]

Starts redis-server, PostgreSQL, N XMPP nodes and HAProxy in front of them on
this machine (settings: cluster/node.env). Ctrl-C stops everything.

  --nodes N           number of nodes (default 3)
  --c2s-port P        load balancer's STARTTLS port (default 5222; 0: any free port)
  --tls-port P        load balancer's direct-TLS port (default 5223; 0: any free port)
  --s2s-port P        load balancer's port for peer servers (default 5269; 0: any free port)
  --https-port P      load balancer's port for web clients (WebSocket over HTTPS;
                      default 5443; 0: any free port)
  --port-base P       node i (from 0) on P+4i, P+4i+1, P+4i+2 and P+4i+3 (STARTTLS,
                      direct TLS, peer servers, HTTPS; default: free ports)
  --redis-port P      Redis port (default: a free port)
  --postgres-port P   PostgreSQL port (default: a free port)
  --dir DIR           run directory, kept: certificate, Redis data (append-only
                      file), PostgreSQL data, node data, logs; the same DIR again
                      keeps the accounts (default: a temporary directory, removed on exit)
  --env KEY=VALUE     a setting for every node on top of cluster/node.env (repeatable)
  --write-compose-haproxy   rewrite cluster/haproxy.cfg from cluster/spec.ts and exit
  -h, --help`;

function port(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535) throw new LaunchError(`${name} must be a port number, got ${JSON.stringify(v)}`);
  return n;
}

async function cli(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        nodes: { type: 'string' },
        'c2s-port': { type: 'string' },
        'tls-port': { type: 'string' },
        's2s-port': { type: 'string' },
        'https-port': { type: 'string' },
        'port-base': { type: 'string' },
        'redis-port': { type: 'string' },
        'postgres-port': { type: 'string' },
        dir: { type: 'string' },
        env: { type: 'string', multiple: true },
        'write-compose-haproxy': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values['write-compose-haproxy']) {
    const file = join(ROOT, 'cluster', 'haproxy.cfg');
    writeFileSync(file, composeHaproxyConfig());
    console.log(`wrote ${file}`);
    return 0;
  }
  const env: Record<string, string> = {};
  for (const kv of values.env ?? []) {
    const i = kv.indexOf('=');
    if (i < 1) {
      console.error(`--env takes KEY=VALUE, got ${JSON.stringify(kv)}`);
      return 2;
    }
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }

  // Signal handlers first: a signal while starting stops the cluster as soon
  // as it is up (launchCluster cleans up after itself if starting fails).
  let signalled: NodeJS.Signals | undefined;
  let wake: (() => void) | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      // A second signal: no more waiting (the exit handler SIGKILLs the children).
      console.error(`${signal} again: killing everything`);
      process.exit(1);
    }
    signalled = signal;
    console.error(`${signal}: stopping the nodes, then haproxy, redis and postgres...`);
    wake?.();
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);

  let cluster: Cluster;
  try {
    if (values.nodes !== undefined && !/^\d+$/.test(values.nodes)) throw new LaunchError(`--nodes must be a number, got ${JSON.stringify(values.nodes)}`);
    console.error('starting the cluster...');
    cluster = await launchCluster({
      nodes: values.nodes === undefined ? undefined : Number(values.nodes),
      c2sPort: port(values['c2s-port'], '--c2s-port'),
      tlsPort: port(values['tls-port'], '--tls-port'),
      s2sPort: port(values['s2s-port'], '--s2s-port'),
      httpsPort: port(values['https-port'], '--https-port'),
      portBase: port(values['port-base'], '--port-base'),
      redisPort: port(values['redis-port'], '--redis-port'),
      postgresPort: port(values['postgres-port'], '--postgres-port'),
      dir: values.dir,
      env,
    });
  } catch (err) {
    console.error(`cannot start the cluster: ${(err as Error).message}`);
    return 1;
  }

  const c = cluster;
  if (!signalled) {
    console.log([
      `cluster up: ${c.nodes.length} node(s) behind haproxy, domain ${c.domain}`,
      `  clients connect to  ${HOST}:${c.c2sPort} (STARTTLS)  and  ${HOST}:${c.tlsPort} (direct TLS)`,
      c.s2sPort === undefined ? '  federation off (XMPP_S2S): no port for peer servers' : `  peer servers connect to  ${HOST}:${c.s2sPort}`,
      ...(c.httpsPort === undefined ? [] : [`  web clients connect to  wss://${c.domain}:${c.httpsPort}/xmpp-websocket`]),
      ...c.nodes.map((n) => `  ${n.name.padEnd(8)} pid ${String(n.pid).padEnd(8)} ${HOST}:${n.c2sPort} / ${n.tlsPort}${n.s2sPort === undefined ? '' : ` / s2s ${n.s2sPort}`}${n.httpsPort === undefined ? '' : ` / https ${n.httpsPort}`}   log ${n.logFile}`),
      `  redis    pid ${String(c.redis.pid).padEnd(8)} ${c.redisUrl}   log ${c.redis.logFile}`,
      `  postgres pid ${String(c.postgres.pid).padEnd(8)} ${c.databaseUrl}   log ${c.postgres.logFile}`,
      `  haproxy  pid ${String(c.haproxy.pid).padEnd(8)} ${c.haproxyConfigFile}   log ${c.haproxy.logFile}`,
      `  certificate (shared by all nodes): ${c.certFile}`,
      `  run directory: ${c.dir}${values.dir === undefined ? ' (temporary: removed on exit; --dir keeps one)' : ''}`,
      '',
      'add a user (cluster-wide: accounts live in PostgreSQL), from the repository root:',
      `  XMPP_REDIS_URL=${c.redisUrl} XMPP_DATABASE_URL=${c.databaseUrl} XMPP_DOMAIN=${c.domain} npm run -s cli -- user add alice`,
      '',
      'Ctrl-C stops the cluster.',
    ].join('\n'));
    // Report processes that end on their own (a crash, or one killed to try failover).
    for (const p of [...c.nodes, c.redis, c.postgres, c.haproxy]) {
      void p.exited.then((e) => {
        if (!signalled) console.error(`${p.name} exited (${e.signal ?? `code ${e.code}`}); see ${p.logFile}`);
      });
    }
    await new Promise<void>((res) => (wake = res));
  }
  await c.stop();
  console.error('cluster stopped');
  return 0;
}

if (import.meta.main) {
  cli(process.argv.slice(2)).then((code) => process.exit(code));
}
