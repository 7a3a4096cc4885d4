// What one node remembers of abuse, in the main thread so that every worker
// of the node sees the same: failed authentications per address and per
// account (a growing delay before each failure is answered, then a
// temporary refusal), and in-band registrations per address (a token
// bucket, as Prosody's mod_register_limits). Workers ask by name with
// plain arguments (worker/guard.ts); nothing here is shared between the
// nodes of a cluster, each counts what reaches it.
import type { BlockList } from 'node:net';
import type { Config } from '../config/index.ts';
import { perIpExemptOf, registrationRateOf } from '../config/index.ts';
import { addressKey, listed } from './limits.ts';
import { log, Throttled } from '../log.ts';

/** Failures answered at once, before delays begin: a user's typos. */
export const FREE_FAILURES = 3;
/** The delay grows up to this many times XMPP_AUTH_FAIL_DELAY_MS. */
export const MAX_DELAY_FACTOR = 16;
/** Entries kept per table (addresses, accounts, registrations, trusted pairs); the least recently touched go first. */
const MAX_ENTRIES = 100_000;
/** Addresses remembered per account as ones it logged in from. */
const TRUSTED_PER_ACCOUNT = 8;

/** Counters for a metrics exporter (all totals since start). */
export interface GuardCounters {
  /** Failed authentications (wrong credentials) counted. */
  authFailures: number;
  /** Of those, answered after a delay. */
  authDelayed: number;
  /** Attempts refused at once: their address is refused for a while. */
  authRefusedIp: number;
  /** Attempts refused at once: their account is refused for a while. */
  authRefusedAccount: number;
  /** Addresses, accounts that reached their limit. */
  ipLockouts: number;
  accountLockouts: number;
  /** In-band registrations let through, refused by the rate. */
  registrations: number;
  registrationsRefused: number;
  /** Password hashings refused by a worker's full queue (logins closed, registrations refused). */
  hashRefused: number;
  /** Connections ended for too many reads per second. */
  readsExceeded: number;
}

interface Failures {
  n: number;
  last: number;
  until: number;
}

/** A Map bounded in size that forgets its least recently touched entries. */
class Recent<V> {
  private readonly map = new Map<string, V>();
  private readonly max: number;

  constructor(max: number) {
    this.max = max;
  }

  get(k: string): V | undefined {
    return this.map.get(k);
  }

  /** Sets, as the most recently touched. */
  set(k: string, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value!);
  }

  delete(k: string): void {
    this.map.delete(k);
  }
}

type GuardConfig = Pick<Config, 'perIpExempt' | 'authFailuresPerIp' | 'authFailuresPerAccount' | 'authLockoutMs' | 'authFailDelayMs' | 'registrationRate'>;

export class Guard {
  readonly counters: GuardCounters = { authFailures: 0, authDelayed: 0, authRefusedIp: 0, authRefusedAccount: 0, ipLockouts: 0, accountLockouts: 0, registrations: 0, registrationsRefused: 0, hashRefused: 0, readsExceeded: 0 };
  private readonly config: GuardConfig;
  private readonly exempt: BlockList;
  private readonly rate: { burst: number; periodMs: number } | undefined;
  private readonly ips = new Recent<Failures>(MAX_ENTRIES);
  private readonly accounts = new Recent<Failures>(MAX_ENTRIES);
  /** Per account, the addresses it logged in from lately: its refusal does not apply to them. */
  private readonly trusted = new Recent<string[]>(MAX_ENTRIES);
  private readonly buckets = new Recent<{ tokens: number; at: number }>(MAX_ENTRIES);
  /** Accounts with sessions on this node waiting to be resumed (XEP-0198), how many: their logins' hashing goes first. */
  private readonly waitingResumption = new Map<string, number>();
  private readonly refusedIp = new Throttled('warn', 'authentication refused: too many failures from this address');
  private readonly refusedAccount = new Throttled('warn', 'authentication refused: too many failures for this account');
  private readonly refusedRegistration = new Throttled('warn', 'registration refused: too many from this address (XMPP_REGISTRATION_RATE)');
  private readonly now: () => number;

  constructor(config: GuardConfig, now: () => number = Date.now) {
    this.config = config;
    this.exempt = perIpExemptOf(config);
    this.rate = registrationRateOf(config);
    this.now = now;
  }

  /** Whether XMPP_PER_IP_EXEMPT names this address (an IPv4-mapped IPv6 one as its IPv4 address). */
  exempted(address: string): boolean {
    return listed(this.exempt, address);
  }

  private perIp(address: string): string | undefined {
    return this.config.authFailuresPerIp > 0 && !this.exempted(address) ? addressKey(address) : undefined;
  }

  private isTrusted(user: string, key: string): boolean {
    return this.trusted.get(user)?.includes(key) ?? false;
  }

  /** Before an exchange: how long this address is still refused (0: it may try). */
  check(address: string): number {
    const key = this.perIp(address);
    const e = key === undefined ? undefined : this.ips.get(key);
    const left = e ? e.until - this.now() : 0;
    if (left <= 0) return 0;
    this.counters.authRefusedIp++;
    this.refusedIp.hit({ ip: key, leftMs: left });
    return left;
  }

  /**
   * Once the username is known: how long attempts as `user` from this
   * address are still refused (left 0: go on), and whether the account has
   * a session here waiting to be resumed (its client is likely logging in
   * to resume it).
   */
  admit(address: string, user: string): { left: number; resuming: boolean } {
    const resuming = this.waitingResumption.has(user);
    if (this.config.authFailuresPerAccount === 0) return { left: 0, resuming };
    const e = this.accounts.get(user);
    const left = e ? e.until - this.now() : 0;
    if (left <= 0 || this.isTrusted(user, addressKey(address))) return { left: 0, resuming };
    this.counters.authRefusedAccount++;
    this.refusedAccount.hit({ user, ip: addressKey(address), leftMs: left });
    return { left, resuming };
  }

  /** A session of `user` on this node started (true) or stopped (false) waiting to be resumed. */
  detached(user: string, waiting: boolean): void {
    const n = (this.waitingResumption.get(user) ?? 0) + (waiting ? 1 : -1);
    if (n > 0) this.waitingResumption.set(user, n);
    else this.waitingResumption.delete(user);
  }

  private bump(table: Recent<Failures>, key: string, limit: number, now: number): Failures {
    let e = table.get(key);
    if (!e || now - e.last >= this.config.authLockoutMs) e = { n: 0, last: now, until: 0 };
    e.n++;
    e.last = now;
    if (e.n >= limit && e.until <= now) e.until = now + this.config.authLockoutMs;
    table.set(key, e);
    return e;
  }

  /**
   * A failed authentication (wrong credentials) from `address`, as `user`
   * when the client named one: counted for both; returns how long to wait
   * before answering it.
   */
  failed(address: string, user: string | null): number {
    const now = this.now();
    this.counters.authFailures++;
    let n = 0;
    const key = this.perIp(address);
    if (key !== undefined) {
      const e = this.bump(this.ips, key, this.config.authFailuresPerIp, now);
      if (e.until > now && e.n === this.config.authFailuresPerIp) {
        this.counters.ipLockouts++;
        log.warn('too many failed authentications from one address: its attempts are refused for a while', { ip: key, failures: e.n, forMs: this.config.authLockoutMs });
      }
      n = e.n;
    }
    const limit = this.config.authFailuresPerAccount;
    if (limit > 0 && user !== null && !this.isTrusted(user, addressKey(address))) {
      const e = this.bump(this.accounts, user, limit, now);
      if (e.until > now && e.n === limit) {
        this.counters.accountLockouts++;
        log.warn('too many failed authentications for one account: its attempts are refused for a while, except from addresses it logged in from lately', { user, ip: addressKey(address), failures: e.n, forMs: this.config.authLockoutMs });
      }
      n = Math.max(n, e.n);
    }
    const delay = n > FREE_FAILURES ? Math.min(this.config.authFailDelayMs * 2 ** (n - FREE_FAILURES - 1), this.config.authFailDelayMs * MAX_DELAY_FACTOR) : 0;
    if (delay > 0) this.counters.authDelayed++;
    return delay;
  }

  /** A successful authentication: the account's failures are forgotten, and the address is one it logs in from. */
  succeeded(address: string, user: string): void {
    this.accounts.delete(user);
    const key = addressKey(address);
    const list = (this.trusted.get(user) ?? []).filter((k) => k !== key);
    list.push(key);
    if (list.length > TRUSTED_PER_ACCOUNT) list.shift();
    this.trusted.set(user, list);
  }

  /** An in-band registration from `address` (XEP-0077): true when the rate lets it through (and it is counted). */
  register(address: string): boolean {
    const rate = this.rate;
    if (!rate || this.exempted(address)) {
      this.counters.registrations++;
      return true;
    }
    const key = addressKey(address);
    const now = this.now();
    const b = this.buckets.get(key) ?? { tokens: rate.burst, at: now };
    b.tokens = Math.min(rate.burst, b.tokens + ((now - b.at) * rate.burst) / rate.periodMs);
    b.at = now;
    const ok = b.tokens >= 1;
    if (ok) b.tokens -= 1;
    this.buckets.set(key, b);
    if (ok) this.counters.registrations++;
    else {
      this.counters.registrationsRefused++;
      this.refusedRegistration.hit({ ip: key });
    }
    return ok;
  }

  /** Events counted by the workers (GuardCounters' hashRefused, readsExceeded). */
  count(name: string): void {
    if (name === 'hashRefused' || name === 'readsExceeded') this.counters[name]++;
  }

  /** A worker's call by name (worker/guard.ts). */
  call(m: string, a: unknown[]): unknown {
    const s = (i: number) => String(a[i]);
    switch (m) {
      case 'check':
        return this.check(s(0));
      case 'admit':
        return this.admit(s(0), s(1));
      case 'failed':
        return this.failed(s(0), a[1] === null ? null : s(1));
      case 'succeeded':
        return this.succeeded(s(0), s(1));
      case 'register':
        return this.register(s(0));
      case 'count':
        return this.count(s(0));
      case 'detached':
        return this.detached(s(0), a[1] === true);
      default:
        throw new TypeError(`no such guard call: ${m}`);
    }
  }
}
