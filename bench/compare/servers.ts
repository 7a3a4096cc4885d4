// The servers under comparison: ours, Prosody and ejabberd, each run from a
// temporary directory with its own generated configuration (nothing under
// /etc is read or changed), on loopback ports picked at random, pinned to one
// core; and the bare TLS relay (bench/relay.ts) for the runtime's ceiling.
//
// The settings are meant to be equivalent (docs/benchmarks.md lists them):
// one domain, TLS required before authentication, the same certificate and
// key, SCRAM-SHA-1 with 4096 PBKDF2 iterations (PLAIN offered too), in-band
// registration open, no rate limits or traffic shapers, the same stanza size
// limit (256 KiB), a listen backlog of 511, and the same features loaded:
// disco, ping, version, register, roster, presence, carbons, offline storage,
// and multi-user chat (XEP-0045) at conference.<domain>, each with its own
// defaults for rooms (history, archiving).
import { mkdirSync, writeFileSync, readFileSync, existsSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { start, stop, waitReady, which, runQuiet } from './procs.ts';
import { freePort } from '../../cluster/launch.ts';
import type { Started } from './procs.ts';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DOMAIN = 'bench.localhost';
export const SCRAM_ITERATIONS = 4096;

export interface Pins {
  /** taskset command, or undefined to run unpinned. */
  taskset: string | undefined;
  serverCpu: string;
  loadCpu: string;
}

export interface Running {
  name: string;
  /** The process whose memory and CPU time are the server's. */
  pid: number;
  /** STARTTLS port (for the relay: its one TLS port). */
  port: number;
  /** Direct-TLS port (XEP-0368); the relay's one port. */
  directPort: number;
  /** Ours: the HTTPS port of its web transports (WebSocket, BOSH), for --transport. */
  httpsPort?: number;
  dir: string;
  log: string;
  stop(): Promise<void>;
}

export interface ServerKind {
  name: string;
  /** What is missing to run it, with the command that installs it; empty when it can run. */
  missing(): string[];
  version(): string;
  /** The settings, in words, for the document. */
  settings: string;
  /** `env`: settings of ours to add for one benchmark (the others take none). */
  start(dir: string, cert: { cert: string; key: string }, pins: Pins, env?: Record<string, string>): Promise<Running>;
}

function pinned(pins: Pins, cmd: string, args: string[]): [string, string[]] {
  return pins.taskset ? [pins.taskset, ['-c', pins.serverCpu, cmd, ...args]] : [cmd, args];
}

/** An environment without the caller's XMPP_* settings (a stray XMPP_REDIS_URL would change what is measured). */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('XMPP_') && !k.startsWith('ERL_') && !k.startsWith('EJABBERD_')) env[k] = v;
  return { ...env, ...extra };
}

async function launch(name: string, dir: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, port: number, directPort: number, pins: Pins, readyMs = 60000): Promise<Running> {
  const log = join(dir, `${name}.log`);
  const [c, a] = pinned(pins, cmd, args);
  const s: Started = start(c, a, { cwd: dir, env, logFile: log });
  const ok = (await waitReady(s, port, DOMAIN, readyMs)) && (await waitReady(s, directPort, DOMAIN, 10000, true));
  if (!ok) {
    await stop(s);
    let tail = '';
    try {
      tail = readFileSync(log, 'utf8').split('\n').slice(-15).join('\n');
    } catch {
      // no log
    }
    throw new Error(`${name} did not become ready on ports ${port} and ${directPort}; log ${log}:\n${tail}`);
  }
  return { name, pid: s.pid, port, directPort, dir, log, stop: () => stop(s) };
}

// ---------------------------------------------------------------- ours

export const ours: ServerKind = {
  name: 'ours',
  missing: () => (existsSync(join(REPO, 'src', 'load', 'cli.ts')) ? [] : ['src/load (the load tool) is missing from this checkout']),
  version: () => {
    try {
      return (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      return 'unknown';
    }
  },
  settings: [
    `XMPP_DOMAIN=${DOMAIN} XMPP_BIND_HOST=127.0.0.1 XMPP_WORKERS=1 XMPP_REGISTRATION=true XMPP_TLS_REQUIRED=true`,
    `XMPP_READ_RATE_BYTES=0 XMPP_SCRAM_ITERATIONS=${SCRAM_ITERATIONS} XMPP_LOG_LEVEL=warn XMPP_TLS_CERT=<cert> XMPP_TLS_KEY=<key>`,
    'XMPP_DATA_DIR=<tmp> XMPP_C2S_PORT=<port> XMPP_TLS_PORT=<port> XMPP_HTTPS_PORT=<port> (WebSocket and BOSH, for --transport; idle otherwise); everything else at its default',
    '(max stanza 256 KiB, 10 resources per account, offline storage on, SQLite account store;',
    `multi-user chat at conference.${DOMAIN}, 1000 occupants per room, every groupchat message written to the room's archive in SQLite before it is sent, history from it).`,
    'The whole process (acceptor main thread, one worker thread, libuv pool) pinned to the server core.',
  ].join(' '),
  async start(dir, cert, pins, extra = {}) {
    const [c2s, direct, web] = [await freePort(), await freePort(), await freePort()];
    const data = join(dir, 'data');
    mkdirSync(data, { recursive: true });
    const env = cleanEnv({
      XMPP_DOMAIN: DOMAIN,
      XMPP_BIND_HOST: '127.0.0.1',
      XMPP_DATA_DIR: data,
      XMPP_C2S_PORT: String(c2s),
      XMPP_TLS_PORT: String(direct),
      XMPP_HTTPS_PORT: String(web),
      XMPP_WORKERS: '1',
      XMPP_REGISTRATION: 'true',
      XMPP_TLS_REQUIRED: 'true',
      XMPP_READ_RATE_BYTES: '0',
      XMPP_SCRAM_ITERATIONS: String(SCRAM_ITERATIONS),
      XMPP_LOG_LEVEL: 'warn',
      XMPP_TLS_CERT: cert.cert,
      XMPP_TLS_KEY: cert.key,
      ...extra,
    });
    return { ...(await launch('ours', dir, process.execPath, [join(REPO, 'src', 'main.ts'), 'start'], env, c2s, direct, pins)), httpsPort: web };
  },
};

// ---------------------------------------------------------------- Prosody

function dpkgVersion(pkg: string): string | undefined {
  return runQuiet('dpkg-query', ['-W', '-f=${Version}', pkg])?.trim() || undefined;
}

export const prosody: ServerKind = {
  name: 'prosody',
  missing: () => (which('prosody') ? [] : ['prosody: not installed; run `apt-get install prosody` (Debian/Ubuntu), then `service prosody stop` (its package starts it on port 5222)']),
  version: () => dpkgVersion('prosody') ?? 'unknown',
  settings: [
    'run from `prosody -F --config <tmp>/prosody.cfg.lua` (run_as_root = true only when run as root),',
    'interfaces 127.0.0.1, c2s_ports and c2s_direct_tls_ports on random ports, no s2s/http/components,',
    'network_backend "epoll", network_settings = { tcp_backlog = 511, nagle = false } (TCP_NODELAY, as ours and ejabberd set it),',
    'ssl = { certificate, key } (the same files),',
    'c2s_require_encryption = true, authentication "internal_hashed" (SCRAM-SHA-1 hashes) with',
    `default_iteration_count = ${SCRAM_ITERATIONS}, storage "internal" (files),`,
    'modules: disco roster saslauth tls ping register version carbons (+ auto-loaded c2s presence message iq offline);',
    `Component "conference.${DOMAIN}" "muc" with its defaults (rooms locked until configured, 20 messages of history in memory, no archive);`,
    'mod_limits not loaded (no c2s rate limit), allow_registration = true, registration throttling off',
    '(min_seconds_between_registrations = 0, registration_throttle_max huge, 127.0.0.1 allow-listed), log level warn.',
  ].join(' '),
  async start(dir, cert, pins) {
    const [c2s, direct] = [await freePort(), await freePort()];
    const data = join(dir, 'data');
    mkdirSync(data, { recursive: true });
    mkdirSync(join(dir, 'certs'), { recursive: true });
    const q = (s: string) => JSON.stringify(s);
    const cfg = `-- Generated by bench/compare for one run.
${process.getuid?.() === 0 ? 'run_as_root = true\n' : ''}daemonize = false
pidfile = ${q(join(dir, 'prosody.pid'))}
data_path = ${q(data)}
plugin_paths = { }
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { ${c2s} }
c2s_direct_tls_ports = { ${direct} }
s2s_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }
network_backend = "epoll"
network_settings = { tcp_backlog = 511, nagle = false }
modules_enabled = { "disco", "roster", "saslauth", "tls", "ping", "register", "version", "carbons" }
modules_disabled = { "s2s" }
authentication = "internal_hashed"
default_iteration_count = ${SCRAM_ITERATIONS}
storage = "internal"
c2s_require_encryption = true
c2s_stanza_size_limit = 262144
allow_registration = true
min_seconds_between_registrations = 0
registration_throttle_max = 100000000
registration_throttle_period = 1
registration_allowlist = { "127.0.0.1", "::1" }
certificates = ${q(join(dir, 'certs'))}
ssl = { certificate = ${q(cert.cert)}, key = ${q(cert.key)} }
log = { { levels = { min = "warn" }, to = "file", filename = ${q(join(dir, 'prosody-internal.log'))} } }

VirtualHost "${DOMAIN}"

Component "conference.${DOMAIN}" "muc"
`;
    const file = join(dir, 'prosody.cfg.lua');
    writeFileSync(file, cfg);
    return launch('prosody', dir, which('prosody')!, ['-F', '--config', file], cleanEnv({}), c2s, direct, pins);
  },
};

// ---------------------------------------------------------------- ejabberd

interface ErlangSetup {
  erl: string;
  erlLibs: string;
  version: string;
}

/**
 * How this system's ejabberd is started: Debian's ejabberdctl runs
 * `erl ... -mnesia dir SPOOL -s ejabberd` with ERL_LIBS pointing at the
 * ejabberd libraries and EJABBERD_CONFIG_PATH at the configuration; as root
 * it switches to the ejabberd user with su. We run the same erl command
 * ourselves, as the current user, with our own configuration, spool and log
 * directories: no node name (no distribution, so no epmd and no conflict
 * with another Erlang node on this machine).
 */
function erlangSetup(): ErlangSetup | undefined {
  const ctl = which('ejabberdctl');
  let erl = which('erl');
  let erlLibs: string | undefined;
  if (ctl) {
    try {
      const text = readFileSync(ctl, 'utf8');
      erlLibs = /^\s*ERL_LIBS=['"]?([^'"\n]+)['"]?/m.exec(text)?.[1];
      const e = /^\s*ERL=['"]?([^'"\n]+)['"]?/m.exec(text)?.[1];
      if (e && existsSync(e)) erl = e;
    } catch {
      // unreadable
    }
  }
  erlLibs ??= '/usr/lib/x86_64-linux-gnu';
  if (!erl || !existsSync(erlLibs)) return undefined;
  const lib = readdirSync(erlLibs).find((d) => /^ejabberd-\d/.test(d) && existsSync(join(erlLibs!, d, 'ebin', 'ejabberd.app')));
  if (!lib) return undefined;
  return { erl, erlLibs, version: dpkgVersion('ejabberd') ?? lib.slice('ejabberd-'.length) };
}

export const ejabberd: ServerKind = {
  name: 'ejabberd',
  missing: () => {
    if (!which('ejabberdctl') && !which('ejabberd')) return ['ejabberd: not installed; run `apt-get install ejabberd` (Debian/Ubuntu), then `ejabberdctl stop` (its package starts it on port 5222)'];
    if (!erlangSetup()) return ['ejabberd: installed, but not as Debian lays it out (erl and an ejabberd-*/ebin under the ERL_LIBS of ejabberdctl); use Debian\'s package: `apt-get install ejabberd`'];
    return [];
  },
  version: () => erlangSetup()?.version ?? 'unknown',
  settings: [
    'run as `erl -noinput -mnesia dir <tmp>/spool -s ejabberd` with EJABBERD_CONFIG_PATH=<tmp>/ejabberd.yml',
    '(what ejabberdctl foreground runs, minus the su to the ejabberd user and the node name), +P 250000, ERL_MAX_PORTS=65536,',
    '+sbwt none +sbwtdcpu none +sbwtdio none (no scheduler busy-waiting, which only steals from the busy threads on one core);',
    'listeners on 127.0.0.1 (c2s with starttls_required: true, and a direct-TLS one), shaper: none, backlog: 511,',
    'max_stanza_size: 262144, certfiles: the same certificate and key, auth_method: internal (Mnesia),',
    'auth_password_format: scram, auth_scram_hash: sha (SCRAM-SHA-1, 4096 iterations, its default), max_fsm_queue: 1000000,',
    'registration_timeout: infinity, mod_register with access and ip_access "all", no welcome message,',
    'modules: mod_disco mod_ping mod_version mod_register mod_roster mod_carboncopy mod_offline, and mod_muc',
    `(at conference.${DOMAIN}, its default; max_users: 1000, as ours; otherwise its defaults: 20 messages of history in memory, no archive)`,
    '(no mod_stream_mgmt, mod_fail2ban, mod_pres_counter, PubSub, HTTP, MQTT, STUN), max_user_sessions 10, loglevel warning.',
  ].join(' '),
  async start(dir, cert, pins) {
    const setup = erlangSetup()!;
    const [c2s, direct] = [await freePort(), await freePort()];
    const spool = join(dir, 'spool');
    const logs = join(dir, 'logs');
    mkdirSync(spool, { recursive: true });
    mkdirSync(logs, { recursive: true });
    const pem = join(dir, 'server.pem');
    writeFileSync(pem, readFileSync(cert.cert, 'utf8') + readFileSync(cert.key, 'utf8'), { mode: 0o600 });
    const q = (s: string) => JSON.stringify(s);
    const listener = (port: number, tlsMode: string) => `  -
    port: ${port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: none
    access: c2s
    backlog: 511
${tlsMode}`;
    const yml = `# Generated by bench/compare for one run.
loglevel: warning
log_rotate_count: 0
hosts:
  - ${q(DOMAIN)}
certfiles:
  - ${q(pem)}
listen:
${listener(c2s, '    starttls_required: true')}
${listener(direct, '    tls: true')}
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
disable_sasl_mechanisms:
  - "digest-md5"
  - "X-OAUTH2"
registration_timeout: infinity
max_fsm_queue: 1000000
acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
  register:
    allow: all
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 100
modules:
  mod_carboncopy: {}
  mod_disco: {}
  mod_muc:
    max_users: 1000
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {}
  mod_register:
    access: register
    ip_access: all
    welcome_message:
      subject: ""
      body: ""
  mod_roster: {}
  mod_version:
    show_os: false
`;
    const file = join(dir, 'ejabberd.yml');
    writeFileSync(file, yml);
    const env = cleanEnv({
      EJABBERD_CONFIG_PATH: file,
      EJABBERD_LOG_PATH: join(logs, 'ejabberd.log'),
      ERL_LIBS: setup.erlLibs,
      ERL_CRASH_DUMP: join(logs, 'erl_crash.dump'),
      ERL_CRASH_DUMP_BYTES: '0',
      ERL_MAX_PORTS: '65536',
      ERL_MAX_ETS_TABLES: '1400',
      HOME: dir,
    });
    // erl execs erlexec, which execs beam.smp: the pid we get is the VM's.
    // No busy waiting by idle schedulers: on the one core the VM gets, a
    // spinning scheduler would only take time from the threads with work
    // (the usual advice for a VM short of cores, as RabbitMQ's defaults do).
    const args = ['+sbwt', 'none', '+sbwtdcpu', 'none', '+sbwtdio', 'none', '-noinput', '-noshell', '-start_epmd', 'false', '+K', 'true', '+P', '250000', '-mnesia', 'dir', q(spool), '-s', 'ejabberd'];
    return launch('ejabberd', dir, setup.erl, args, env, c2s, direct, pins, 90000);
  },
};

// ---------------------------------------------------------------- the relay

export const relay: ServerKind = {
  name: 'relay',
  missing: () => [],
  version: () => process.version,
  settings: 'bench/relay.ts: one Node.js thread, TLS (same certificate and key), length-framed messages forwarded by destination id; no XML, no authentication.',
  async start(dir, cert, pins) {
    const port = await freePort();
    const log = join(dir, 'relay.log');
    const [c, a] = pinned(pins, process.execPath, [join(REPO, 'bench', 'relay.ts'), '--port', String(port), '--cert', cert.cert, '--key', cert.key]);
    const s = start(c, a, { cwd: dir, env: cleanEnv({}), logFile: log, capture: true });
    const deadline = Date.now() + 20000;
    while (!s.stdout().includes('listening') && Date.now() < deadline && s.proc.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    if (!s.stdout().includes('listening')) {
      await stop(s);
      throw new Error(`relay did not start; log ${log}`);
    }
    return { name: 'relay', pid: s.pid, port, directPort: port, dir, log, stop: () => stop(s) };
  },
};

export const KINDS: ServerKind[] = [ours, prosody, ejabberd, relay];
