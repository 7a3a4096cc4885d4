// Processes for the comparison: every child is started in its own process
// group and remembered, so that all of them (and what they start: Erlang's
// helpers, a shell's children) end with the run, on success, error or Ctrl-C.
import { spawn, execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, existsSync, accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';

const children = new Set<ChildProcess>();
/** Set once stopAll has begun: nothing new is started after it. */
let closed = false;

export interface Started {
  proc: ChildProcess;
  pid: number;
  /** Resolves with the exit code (or signal name) once the process has gone. */
  exited: Promise<number | string>;
}

/**
 * Starts `cmd args` in its own process group, stdout and stderr appended to
 * `logFile`, and kept in memory too when `capture` asks (stdout(), stderr()).
 */
export function start(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; logFile: string; capture?: boolean }): Started & { stdout: () => string; stderr: () => string } {
  if (closed) throw new Error('stopping: no new process');
  const log = createWriteStream(opts.logFile, { flags: 'a' });
  log.write(`$ ${[cmd, ...args].join(' ')}\n`);
  const proc = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => {
    if (opts.capture) out += d.toString();
    log.write(d);
  });
  proc.stderr!.on('data', (d: Buffer) => {
    if (opts.capture) err += d.toString();
    log.write(d);
  });
  const exited = new Promise<number | string>((resolve) => {
    proc.on('error', (err) => {
      log.write(`spawn error: ${err.message}\n`);
      children.delete(proc);
      resolve('spawn-error');
    });
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      // Let the pipes drain before the log is closed.
      setImmediate(() => log.end());
      resolve(code ?? signal ?? -1);
    });
  });
  return { proc, pid: proc.pid ?? -1, exited, stdout: () => out, stderr: () => err };
}

function signalGroup(p: ChildProcess, signal: NodeJS.Signals): void {
  if (p.pid === undefined) return;
  try {
    process.kill(-p.pid, signal);
  } catch {
    try {
      p.kill(signal);
    } catch {
      // gone
    }
  }
}

/** SIGTERM to the process group, SIGKILL after `graceMs`; resolves once it has exited. */
export async function stop(s: Started, graceMs = 5000): Promise<void> {
  if (s.proc.exitCode !== null || s.proc.signalCode !== null) {
    signalGroup(s.proc, 'SIGKILL'); // its helpers, if any are left
    return;
  }
  signalGroup(s.proc, 'SIGTERM');
  const timer = setTimeout(() => signalGroup(s.proc, 'SIGKILL'), graceMs);
  await s.exited;
  clearTimeout(timer);
  signalGroup(s.proc, 'SIGKILL');
}

/** Ends every child still running: SIGTERM, then SIGKILL. */
export async function stopAll(): Promise<void> {
  closed = true;
  const list = [...children];
  for (const p of list) signalGroup(p, 'SIGTERM');
  const deadline = Date.now() + 4000;
  while (children.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const p of list) signalGroup(p, 'SIGKILL');
}

/** Last resort at exit (synchronous): SIGKILL to every child's group. */
export function killAllNow(): void {
  for (const p of children) signalGroup(p, 'SIGKILL');
}


/**
 * Opens an XMPP stream on `port` and waits for the stream features: the
 * server is ready for clients. `tlsDirect` speaks TLS first (XEP-0368).
 */
function probeOnce(port: number, domain: string, tlsDirect: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const header = `<?xml version='1.0'?><stream:stream to='${domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`;
    const sock: net.Socket = tlsDirect ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: domain }) : net.connect({ host: '127.0.0.1', port });
    let got = '';
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(3000, () => done(false));
    sock.once(tlsDirect ? 'secureConnect' : 'connect', () => sock.write(header));
    sock.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('features')) done(true);
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

/** Waits until the server answers a stream header with its features, or until it exits or `timeoutMs` passes. */
export async function waitReady(s: Started, port: number, domain: string, timeoutMs: number, tlsDirect = false): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void s.exited.then(() => (gone = true));
  while (Date.now() < deadline && !gone) {
    if (await probeOnce(port, domain, tlsDirect)) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

let clockTicks = 0;
function ticksPerSecond(): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU seconds used so far by process `pid` (all its threads), or undefined. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may contain spaces: utime is field 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / ticksPerSecond();
  } catch {
    return undefined;
  }
}

/** Busy seconds (everything but idle and iowait) of each CPU so far, by CPU number. */
export function coreBusySeconds(): Map<number, number> {
  const out = new Map<number, number>();
  try {
    for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
      const m = /^cpu(\d+)\s+(.*)$/.exec(line);
      if (!m) continue;
      const f = m[2].trim().split(/\s+/).map(Number);
      // user nice system idle iowait irq softirq steal
      const busy = f[0] + f[1] + f[2] + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
      out.set(Number(m[1]), busy / ticksPerSecond());
    }
  } catch {
    // not Linux
  }
  return out;
}


/** The full path of `name` on PATH (or the sbin directories root's PATH has), or undefined. */
export function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, name);
    try {
      if (existsSync(p)) {
        accessSync(p, constants.X_OK);
        return p;
      }
    } catch {
      // not executable
    }
  }
  return undefined;
}

/** Runs a command to its end and returns its stdout, or undefined when it fails. */
export function runQuiet(cmd: string, args: string[], timeoutMs = 10000): string | undefined {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
}
