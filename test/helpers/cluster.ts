// Real cluster nodes for tests: each node is its own process started the way
// users start one (src/main.ts start), joined through a real redis-server,
// with its durable data in a real PostgreSQL (both private to the cluster).
import { spawn, execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { RedisServer } from './redis.ts';
import { PostgresServer } from './postgres.ts';

const MAIN = new URL('../../src/main.ts', import.meta.url).pathname;

/** One certificate for the whole cluster, as behind a load balancer. */
export function clusterCertificate(dir: string): { cert: string; key: string } {
  const cert = join(dir, 'cluster.crt');
  const key = join(dir, 'cluster.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

export class NodeProcess {
  readonly name: string;
  /** The ports it picked itself (port 0), from its "listening" line; 0 until then. */
  c2sPort = 0;
  tlsPort = 0;
  /** The external components' port, when XMPP_COMPONENT_PORT was given. */
  componentPort: number | undefined;
  s2sPort: number | undefined;
  /** The HTTPS listener's port, when XMPP_HTTPS_PORT was given. */
  httpsPort: number | undefined;
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  log = '';
  readonly dataDir: string;

  private constructor(name: string, proc: ChildProcess, dataDir: string) {
    this.name = name;
    this.proc = proc;
    this.dataDir = dataDir;
    this.exited = once(proc, 'exit').then(([code]) => code as number | null);
    proc.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
  }

  /**
   * A node on ports it picks itself (unless `env` names them): a port picked
   * beforehand is free until the node binds it, and another test may take it
   * meanwhile.
   */
  static async start(name: string, env: Record<string, string>): Promise<NodeProcess> {
    const dataDir = mkdtempSync(join(tmpdir(), `xmpp-${name}-`));
    const proc = spawn(process.execPath, [MAIN, 'start'], {
      env: {
        ...process.env,
        XMPP_DOMAIN: 'localhost',
        XMPP_NODE_ID: name,
        XMPP_C2S_PORT: '0',
        XMPP_TLS_PORT: '0',
        XMPP_S2S: 'false',
        XMPP_S2S_PORT: '0',
        XMPP_DATA_DIR: dataDir,
        XMPP_WORKERS: '1',
        XMPP_LOG_LEVEL: 'info',
        ...env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const node = new NodeProcess(name, proc, dataDir);
    await node.waitForLog(/"msg":"listening"/);
    const line = node.log.split('\n').find((l) => l.includes('"msg":"listening"'))!;
    const { c2sPort, tlsPort, componentPort, s2sPort, httpsPort } = JSON.parse(line) as { c2sPort: number; tlsPort: number; componentPort?: number; s2sPort?: number; httpsPort?: number };
    node.c2sPort = c2sPort;
    node.tlsPort = tlsPort;
    node.componentPort = componentPort;
    node.s2sPort = s2sPort;
    node.httpsPort = httpsPort;
    return node;
  }

  /** Resolves when the node's log (JSON lines on stderr) matches. */
  waitForLog(re: RegExp): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (re.test(this.log)) {
          this.proc.stderr!.off('data', check);
          this.proc.off('exit', onExit);
          resolve();
        }
      };
      const onExit = () => reject(new Error(`${this.name} exited before ${re}:\n${this.log}`));
      this.proc.stderr!.on('data', check);
      this.proc.once('exit', onExit);
      check();
    });
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    const code = await this.exited;
    rmSync(this.dataDir, { recursive: true, force: true });
    return code;
  }
}

/** A redis-server and a PostgreSQL of its own, and nodes joined through them, sharing one certificate. */
export interface TestCluster {
  redis: RedisServer;
  /** XMPP_DATABASE_URL of the nodes: accounts, rosters and offline messages. */
  databaseUrl: string;
  /** The cluster's certificate (PEM file), for clients that verify it. */
  certFile: string;
  nodes: NodeProcess[];
  /**
   * Starts one more node joined through the same Redis with the same
   * certificate (`env` added to the cluster's); also to restart a node under
   * its old name once its process has exited. It is stopped with the rest.
   */
  add(name: string, env?: Record<string, string>): Promise<NodeProcess>;
  /** SIGKILLs what is left of the nodes, destroys Redis, PostgreSQL and the certificate. */
  stop(): Promise<void>;
}

export async function startCluster(names: string[], env: Record<string, string> = {}): Promise<TestCluster> {
  // Either started, or neither left running (a test whose cluster failed to start must still end).
  const services = await Promise.allSettled([RedisServer.start(), PostgresServer.start()]);
  const broken = services.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (broken) {
    await Promise.all(services.map((r) => (r.status === 'fulfilled' ? r.value.destroy() : undefined)));
    throw broken.reason;
  }
  const [redis, postgres] = services.map((r) => (r as PromiseFulfilledResult<RedisServer | PostgresServer>).value) as [RedisServer, PostgresServer];
  let databaseUrl: string;
  let certDir: string;
  let cert: string;
  let key: string;
  try {
    databaseUrl = await postgres.createDatabase('xmpp');
    certDir = mkdtempSync(join(tmpdir(), 'xmpp-cert-'));
    ({ cert, key } = clusterCertificate(certDir));
  } catch (err) {
    await Promise.all([redis.destroy(), postgres.destroy()]);
    throw err;
  }
  const all = { XMPP_REDIS_URL: redis.url, XMPP_DATABASE_URL: databaseUrl, XMPP_TLS_CERT: cert, XMPP_TLS_KEY: key, ...env };
  const added: NodeProcess[] = [];
  const stop = async () => {
    await Promise.all(added.map((n) => n.stop('SIGKILL')));
    await Promise.all([redis.destroy(), postgres.destroy()]);
    rmSync(certDir, { recursive: true, force: true });
  };
  // A node that fails to start takes the others, Redis and PostgreSQL with it.
  const started = await Promise.allSettled(names.map((name) => NodeProcess.start(name, all)));
  const nodes = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  added.push(...nodes);
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await stop();
    throw failed.reason;
  }
  return {
    redis,
    databaseUrl,
    certFile: cert,
    nodes,
    async add(name, extra = {}) {
      const node = await NodeProcess.start(name, { ...all, ...extra });
      added.push(node);
      return node;
    },
    stop,
  };
}
