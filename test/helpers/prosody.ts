// A real Prosody (Debian's package) for federation tests: started by the
// test in a temp directory, listening for servers on port 5269 of a
// loopback address of its own and for clients on a free port of
// 127.0.0.1, finding our servers by name through a hosts file of the
// test's own (`unbound = { hoststxt = ... }`), so that no system file and
// no DNS is involved. Accounts are written in Prosody's internal_plain
// storage format before it starts.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { freePort } from './redis.ts';
import type { CertFiles } from './pki.ts';

export interface ProsodyHost {
  domain: string;
  cert: CertFiles;
  /** s2s_secure_auth for this host (Prosody's default is false). */
  secureAuth?: boolean;
  /** Accounts (name → password). */
  users?: Record<string, string>;
}

export interface Prosody {
  /** Its client port on 127.0.0.1. */
  c2sPort: number;
  /** Its log lines so far (debug level, to stdout). */
  readonly log: string[];
  /** Resolves with the first log line matching `re` (from the start). */
  waitForLog(re: RegExp, ms?: number): Promise<string>;
  stop(): Promise<void>;
}

const lua = (s: string) => JSON.stringify(s);

/** Prosody says nothing when it listens below info level: its ports are tried until they accept. */
async function waitUntilListening(host: string, port: number, exited: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (exited()) throw new Error(`prosody exited before listening on ${host}:${port}`);
    if (Date.now() > deadline) throw new Error(`prosody did not listen on ${host}:${port} within ${ms} ms`);
    // Not bound yet: Prosody is still reading its configuration (it has no readiness signal).
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * `logLevel`: debug (the default: tests read Prosody's log) or less, for
 * benchmarks. `modules`: Prosody modules to load besides the ones every
 * set-up has (roster, saslauth, tls, dialback, disco, ping, version), such
 * as "vcard".
 */
export async function startProsody(opts: {
  dir: string;
  address: string;
  hosts: Record<string, string>;
  cafile: string;
  vhosts: ProsodyHost[];
  logLevel?: 'debug' | 'info' | 'warn';
  modules?: string[];
}): Promise<Prosody> {
  const { dir } = opts;
  const data = join(dir, 'data');
  mkdirSync(join(dir, 'certs'), { recursive: true });
  for (const v of opts.vhosts) {
    // internal_plain's storage: data/<host, '.' as %2e>/accounts/<user>.dat, a Lua table.
    const accounts = join(data, encodeURIComponent(v.domain).replace(/\./g, '%2e'), 'accounts');
    mkdirSync(accounts, { recursive: true });
    for (const [u, p] of Object.entries(v.users ?? {})) writeFileSync(join(accounts, `${u}.dat`), `return {\n\t["password"] = ${lua(p)};\n};\n`);
  }
  const hostsFile = join(dir, 'hosts');
  writeFileSync(hostsFile, Object.entries(opts.hosts).map(([name, ip]) => `${ip} ${name}\n`).join(''));
  const c2sPort = await freePort();
  const cfg = join(dir, 'prosody.cfg.lua');
  writeFileSync(
    cfg,
    [
      // Tests may run as root (CI); Prosody refuses that unless told.
      'run_as_root = true',
      `pidfile = ${lua(join(dir, 'prosody.pid'))}`,
      `data_path = ${lua(data)}`,
      `certificates = ${lua(join(dir, 'certs'))}`,
      `log = { { levels = { min = ${lua(opts.logLevel ?? 'debug')} }, to = "console" } }`,
      `interfaces = { ${lua(opts.address)} }`,
      'c2s_interfaces = { "127.0.0.1" }',
      `c2s_ports = { ${c2sPort} }`,
      's2s_ports = { 5269 }',
      `modules_enabled = { ${['roster', 'saslauth', 'tls', 'dialback', 'disco', 'ping', 'version', ...(opts.modules ?? [])].map((m) => `${lua(m)};`).join(' ')} }`,
      'authentication = "internal_plain"',
      'c2s_require_encryption = true',
      's2s_require_encryption = true',
      's2s_secure_auth = false',
      `unbound = { hoststxt = ${lua(hostsFile)} }`,
      `ssl = { cafile = ${lua(opts.cafile)} }`,
      ...opts.vhosts.flatMap((v) => [
        `VirtualHost ${lua(v.domain)}`,
        `  ssl = { certificate = ${lua(v.cert.cert)}, key = ${lua(v.cert.key)}, cafile = ${lua(opts.cafile)} }`,
        `  s2s_secure_auth = ${v.secureAuth ? 'true' : 'false'}`,
      ]),
      '',
    ].join('\n'),
  );
  const proc: ChildProcess = spawn('prosody', ['-F', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  const waiters: (() => void)[] = [];
  let exited = false;
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  for (const stream of [proc.stdout!, proc.stderr!]) createInterface({ input: stream }).on('line', (l) => {
    log.push(l);
    wake();
  });
  const gone = once(proc, 'exit').then(() => {
    exited = true;
    wake();
  });
  const waitForLog = async (re: RegExp, ms = 15_000): Promise<string> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const line = log.find((l) => re.test(l));
      if (line) return line;
      if (exited) throw new Error(`prosody exited before logging ${re}:\n${log.slice(-30).join('\n')}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`prosody did not log ${re} within ${ms} ms:\n${log.slice(-30).join('\n')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  };
  await waitUntilListening(opts.address, 5269, () => exited);
  await waitUntilListening('127.0.0.1', c2sPort, () => exited);
  return {
    c2sPort,
    log,
    waitForLog,
    async stop() {
      if (!exited) proc.kill('SIGTERM');
      await gone;
    },
  };
}
