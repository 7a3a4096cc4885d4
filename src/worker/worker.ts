// The worker thread: piscina runs one long-lived task per connection (the
// actor's lifetime) plus one "join" task that links it to the node's hub.
import net from 'node:net';
import tls from 'node:tls';
import { workerData, threadId } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import type { Config } from '../config/index.ts';
import type { TlsIdentity } from '../tls/certificate.ts';
import { SqliteAccountStore } from '../accounts/sqlite.ts';
import { HubRegistry } from './hub-registry.ts';
import { Router } from '../router/router.ts';
import { Session } from '../session/session.ts';
import { encode, decode } from './wire.ts';
import type { Envelope, FromHub } from './wire.ts';
import type { WorkerContext } from './context.ts';
import { ping } from '../modules/ping.ts';
import { version } from '../modules/version.ts';
import { disco } from '../modules/disco.ts';
import { register } from '../modules/register.ts';
import { sessionLegacy } from '../modules/session-legacy.ts';
import type { ServerModule } from '../modules/module.ts';
import { join as joinPath } from 'node:path';
import { log, setLogLevel } from '../log.ts';

export interface WorkerData {
  config: Config;
  tls: TlsIdentity;
}

export type Task = { t: 'join'; port: MessagePort } | { t: 'conn'; socket: net.Socket; directTls: boolean };

const { config, tls: identity } = workerData as WorkerData;
setLogLevel(config.logLevel);

let ctx: WorkerContext | undefined;
let joined: Promise<void> | undefined;

function sweep(): void {
  if (!ctx) return;
  const now = Date.now();
  const { bindTimeoutMs, idleTimeoutMs } = config;
  for (const s of ctx.all) {
    if (s.state !== 'established' && now - s.createdAt > bindTimeoutMs) s.close({ condition: 'connection-timeout', text: 'no resource bound in time' });
    else if (s.state === 'established' && idleTimeoutMs > 0 && now - s.lastActivity > idleTimeoutMs) s.close({ condition: 'connection-timeout', text: 'idle for too long' });
  }
}

async function join(hub: MessagePort): Promise<void> {
  const registry = new HubRegistry(hub);
  const peers = new Map<number, MessagePort>();
  const modules: ServerModule[] = [ping, version, register, sessionLegacy];
  modules.push(disco(() => modules));
  const accounts = SqliteAccountStore.open(joinPath(config.dataDir, 'accounts.sqlite'), config.scramIterations);
  const sessions = new Map<string, Session>();
  let index = -1;
  const router = new Router({
    domain: config.domain,
    node: config.nodeId,
    get worker() {
      return index;
    },
    registry,
    sessions,
    accountExists: (local) => accounts.exists(local),
    transport: {
      toWorker: (w, env) => peers.get(w)?.postMessage(encode(env)),
      toNode: () => false,
    },
    modules,
  });
  const c: WorkerContext = {
    config,
    secureContext: tls.createSecureContext({ cert: identity.cert, key: identity.key }),
    accounts,
    registry,
    router,
    node: config.nodeId,
    index,
    sessions,
    all: new Set(),
  };
  const sweeper = setInterval(sweep, Math.max(10, Math.min(1000, config.bindTimeoutMs / 4, config.idleTimeoutMs > 0 ? config.idleTimeoutMs / 4 : 1000)));
  sweeper.unref();

  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  hub.on('message', (raw: Uint8Array | { t: 'peers'; peers: { index: number; port: MessagePort }[] }) => {
    if (!(raw instanceof Uint8Array)) {
      for (const p of raw.peers) {
        peers.set(p.index, p.port);
        p.port.on('message', (buf: Uint8Array) => router.onEnvelope(decode<Envelope>(buf)));
      }
      return;
    }
    const msg = decode<FromHub>(raw);
    if (registry.onHubMessage(msg)) return;
    if (msg.t === 'welcome') {
      index = msg.index;
      c.index = index;
      ctx = c;
    } else if (msg.t === 'shutdown') {
      void shutdown(c).then(() => {
        hub.postMessage(encode({ t: 'stopped' }));
        clearInterval(sweeper);
        accounts.close();
        stop();
      });
    }
  });
  hub.postMessage(encode({ t: 'hello', threadId }));
  await stopped;
  for (const p of peers.values()) p.close();
  hub.close();
}

async function shutdown(c: WorkerContext): Promise<void> {
  const open = [...c.all];
  for (const s of open) s.close({ condition: 'system-shutdown', text: 'the server is shutting down' });
  await Promise.all(open.map((s) => s.done));
}


export default async function handle(task: Task): Promise<string> {
  if (task.t === 'join') {
    if (joined) {
      task.port.close();
      return 'declined';
    }
    joined = join(task.port);
    await joined;
    return 'left';
  }
  if (!ctx) {
    task.socket.destroy();
    log.error('connection reached a worker that has not joined the hub');
    return 'refused';
  }
  const session = new Session(ctx, task.socket, task.directTls);
  await session.done;
  return 'closed';
}
