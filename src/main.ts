#!/usr/bin/env node
// Composition root and CLI: `start` runs a node; `user add|remove|passwd|list`
// manages accounts in the same store the server uses; `load` generates load
// on a server (src/load/).
import { createInterface } from 'node:readline';
import { loadConfig, ConfigError, SETTINGS } from './config/index.ts';
import type { Config } from './config/index.ts';
import { startServer } from './acceptor/server.ts';
import type { RunningServer } from './acceptor/server.ts';
import { openAccountStore } from './accounts/open.ts';
import { normalizeUsername } from './accounts/store.ts';
import { openRosterStore } from './roster/open.ts';
import { openOfflineStore } from './offline/open.ts';
import { openToOthers } from './storage/files.ts';
import { log, setLogLevel } from './log.ts';

const USAGE = `usage: xmpp-server <command>
  start                         run a server node (configuration: environment or xmpp.config.json)
  user add <name> [password]    create an account (password read from stdin when omitted)
  user passwd <name> [password] change a password
  user remove <name>            delete an account
  user list                     list accounts
  config                        print the settings and their environment variables
  load <workload> [options]     generate load on a server: login, chat, idle or storm (load --help)`;

async function readPassword(given: string | undefined): Promise<string> {
  if (given) return given;
  if (process.stdin.isTTY) process.stderr.write('password: ');
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    rl.close();
    return line;
  }
  throw new Error('no password given');
}

async function user(config: Config, [sub, name, password]: string[]): Promise<number> {
  // The store the server uses: the SQLite file, or Redis in cluster mode.
  const store = await openAccountStore(config);
  try {
    switch (sub) {
      case 'add':
        if (!name) break;
        await store.create(name, await readPassword(password));
        console.log(`added ${name}@${config.domain}`);
        return 0;
      case 'passwd':
        if (!name) break;
        await store.setPassword(name, await readPassword(password));
        console.log(`changed the password of ${name}@${config.domain}`);
        return 0;
      case 'remove':
        if (!name) break;
        if (!(await store.remove(name))) {
          console.error(`error: no account ${name}`);
          return 1;
        }
        {
          // The account's data goes with it.
          const roster = await openRosterStore(config);
          await roster.removeAll(normalizeUsername(name));
          await roster.close();
          const offline = await openOfflineStore(config);
          await offline.removeAll(normalizeUsername(name));
          await offline.close();
        }
        console.log(`removed ${name}@${config.domain}`);
        return 0;
      case 'list':
        for (const u of await store.list()) console.log(`${u}@${config.domain}`);
        return 0;
    }
    console.error(USAGE);
    return 2;
  } finally {
    await store.close();
  }
}

async function start(config: Config): Promise<void> {
  // Reloading does not exist: a reload sent by a service manager
  // (ExecReload=kill -HUP) must not be an outage.
  process.on('SIGHUP', () => log.warn('SIGHUP ignored: the configuration is read only at start; restart the server to apply changes', { signal: 'SIGHUP' }));
  for (const entry of openToOthers(config.dataDir)) log.warn('data directory entry open to other users', { ...entry });
  // The handlers go in before the server logs "listening": a signal sent as
  // soon as that line appears must still shut down gracefully. A signal while
  // starting abandons a wait for Redis at once; any other step of the start
  // runs to its end (bounded like a shutdown), then the server stops. A
  // second signal exits at once.
  const starting = new AbortController();
  let requested: string | undefined;
  let cutShort: NodeJS.Timeout | undefined;
  let stop = (signal: string, _code?: number) => {
    if (requested) process.exit(1);
    requested = signal;
    log.info('shutting down', { signal });
    starting.abort(new Error(`stopped by ${signal} while starting`));
    cutShort = setTimeout(() => {
      log.error('the start did not end in time after the stop request');
      process.exit(1);
    }, config.shutdownTimeoutMs + 5000);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  let server: RunningServer;
  try {
    server = await startServer(config, { signal: starting.signal });
  } catch (err) {
    // Nothing was served yet: stopping now is the whole shutdown.
    if (starting.signal.aborted) process.exit(0);
    throw err;
  }
  clearTimeout(cutShort);
  let stopping = false;
  stop = (signal: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    if (signal !== requested) log.info('shutting down', { signal });
    // After the deadline, leaving the cluster (a Redis command, 2 s at most)
    // and stopping the workers still take a moment: only a hang exits 1.
    const hard = setTimeout(() => process.exit(1), config.shutdownTimeoutMs + 5000);
    hard.unref();
    server.close().then(
      () => process.exit(code),
      (err: unknown) => {
        log.error('shutdown failed', { err: String(err) });
        process.exit(1);
      },
    );
  };
  if (requested) stop(requested);
  // Two processes must not serve under one node name: the older one yields.
  server.membership?.on('superseded', () => stop('superseded', 1));
}

async function main(argv: string[]): Promise<number | undefined> {
  const [cmd = 'start', ...rest] = argv;
  if (cmd === 'config') {
    for (const s of SETTINGS) console.log(`${s.env.padEnd(26)} ${s.key.padEnd(24)} ${s.doc}`);
    return 0;
  }
  if (cmd === 'load') {
    // The load tool needs no server configuration; loaded only when used.
    const { runLoad } = await import('./load/cli.ts');
    return runLoad(rest);
  }
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`configuration error: ${err.message}`);
      return 78; // EX_CONFIG
    }
    throw err;
  }
  setLogLevel(config.logLevel);
  if (cmd === 'start') {
    try {
      await start(config);
    } catch (err) {
      // A port in use, no openssl, an unreadable certificate: one clear line,
      // and an exit that does not wait for the worker threads already started.
      console.error(`cannot start: ${(err as Error).message}`);
      process.exit(1);
    }
    return undefined;
  }
  if (cmd === 'user') {
    try {
      return await user(config, rest);
    } catch (err) {
      console.error(`error: ${(err as Error).message}`);
      return 1;
    }
  }
  console.error(USAGE);
  return 2;
}

main(process.argv.slice(2)).then((code) => {
  if (code !== undefined) process.exitCode = code;
});
