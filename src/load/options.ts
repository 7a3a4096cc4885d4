// The load tool's options and the messages between its main thread and its
// worker threads.
import type { MechanismName, TlsMode } from './client.ts';
import type { StatsDelta } from './stats.ts';
import type { Transport } from './web.ts';

export const WORKLOADS = ['login', 'chat', 'idle', 'storm', 'flap', 'muc'] as const;
export type Workload = (typeof WORKLOADS)[number];

export interface LoadOptions {
  workload: Workload;
  /** An address (resolved once by the main thread). */
  host: string;
  /** The name given on the command line, for display. */
  hostName: string;
  port: number;
  domain: string;
  tls: TlsMode;
  /** tcp; or WebSocket (RFC 7395) or BOSH (XEP-0206) at host:port with `web`'s scheme and path. */
  transport: Transport;
  web?: { secure: boolean; path: string };
  mechanism: MechanismName;
  /** Enable XEP-0198 stream management after binding and answer the server's ack requests. */
  sm: boolean;
  /** Ask for resumption with stream management (always for flap). */
  resume: boolean;
  /** flap: where the dropped connections resume (another node of a cluster); undefined: --port. */
  resumePort: number | undefined;
  /** chat across servers: the receiving users' server (its domain, address and client port). */
  remote?: { domain: string; host: string; port: number };
  users: number;
  userPrefix: string;
  password: string;
  provision: boolean;
  workers: number;
  durationS: number;
  count: number;
  /** login: arrivals per second; chat: messages per second per user; muc: messages per second per room. */
  rate: number;
  rampS: number;
  /** muc: rooms, occupants in each, the rooms' names (<prefix><n>) and their service's domain. */
  rooms: number;
  occupants: number;
  roomPrefix: string;
  mucDomain: string;
  /** muc: how long what was sent may take to arrive once sending stops, before it counts as lost. */
  drainS: number;
  connections: number;
  pid: number | undefined;
  json: boolean;
  report: string | undefined;
  allowRemote: boolean;
  timeoutS: number;
  concurrency: number;
  quiet: boolean;
}

/** A web transport's URL, at the (resolved) host and port; undefined for tcp. */
export function webUrl(o: Pick<LoadOptions, 'transport' | 'web' | 'host' | 'port'>): string | undefined {
  if (o.transport === 'tcp' || !o.web) return undefined;
  const scheme = o.transport === 'websocket' ? (o.web.secure ? 'wss' : 'ws') : o.web.secure ? 'https' : 'http';
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  return `${scheme}://${host}:${o.port}${o.web.path}`;
}

/** The share of `total` that worker `w` of `n` takes. */
export function shareOf(total: number, w: number, n: number): number {
  if (!Number.isFinite(total)) return total;
  return Math.floor(total / n) + (w < total % n ? 1 : 0);
}

export type ToWorker =
  | { t: 'go' }
  | { t: 'send'; peers: number[] }
  | { t: 'storm' }
  | { t: 'flap' }
  | { t: 'stop' }
  | { t: 'close' };

export type FromWorker =
  | { t: 'stats'; d: StatsDelta }
  | { t: 'provisioned'; created: number; existed: number; failed: number; errors: Record<string, number> }
  /** muc: `joined` occupants are in their rooms. */
  | { t: 'ready'; online: number[]; joined?: number }
  | { t: 'done' }
  /** muc: the deliveries this worker's rooms should have made (messages sent × occupants). */
  | { t: 'stopped'; expected?: number }
  | { t: 'idle' }
  | { t: 'rebound'; first: number; last: number; ok: number }
  | { t: 'resumed'; first: number; last: number; ok: number; failed: number }
  | { t: 'final'; d: StatsDelta };
