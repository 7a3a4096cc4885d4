// Which presence the server marks as new to a hosted service that is a
// roster contact (DeliverOptions.arriving; XEP-0060 on_sub_and_presence): an
// approval that changes the roster does, one repeated does not, nor the
// presence the server sends on the user's behalf when a request comes again
// (RFC 6121 §3.1.3). A repeat must not make the service send everything
// again. The presence service on a real roster store, with a routing that
// records the probes it asks for.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import { PresenceService } from '../../src/presence/presence.ts';
import type { PresenceRouting, PresenceSession } from '../../src/presence/presence.ts';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import { OUTBOUND, INBOUND } from '../../src/presence/subscription.ts';
import type { SessionRecord, SessionRegistry } from '../../src/registry/registry.ts';
import { parseJid } from '../../src/xmpp/jid.ts';

const DOMAIN = 'localhost';
const SERVICE = `pubsub.${DOMAIN}`;
const BOB = `bob@${DOMAIN}`;

function setUp(t: import('ava').ExecutionContext) {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-arriving-'));
  const roster = SqliteRosterStore.open(join(dir, 'roster.sqlite'));
  const offline = SqliteOfflineStore.open(join(dir, 'offline.sqlite'));
  t.teardown(() => {
    roster.close();
    offline.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const rec = { jid: `${BOB}/r`, bare: BOB, sid: 's1', available: true, priority: 0 } as unknown as SessionRecord;
  const probes: { to: string; arriving: boolean }[] = [];
  const routing = {
    resources: async () => [rec],
    available: async () => [rec],
    deliver: () => {},
    pushTo: () => {},
    pushRoster: async () => {},
    probe: (_r: SessionRecord, to: string, arriving?: boolean) => void probes.push({ to, arriving: arriving === true }),
    flushOffline: () => {},
    offlineWaiting: async () => {},
    track: (work: () => Promise<void>) => void work(),
    routeInternal: async () => {},
    contactService: (d: string) => d === SERVICE,
  } as unknown as PresenceRouting;
  const registry = { noteDirected: async () => {} } as unknown as SessionRegistry;
  const presence = new PresenceService(
    { domain: DOMAIN, roster, offline, registry, accountExists: async (l) => l === 'bob', maxRosterItems: 100, maxPendingRequests: 100, maxOutgoingRequests: 100, maxDirected: 100, federation: false },
    routing,
  );
  const session = { id: 's1', jid: `${BOB}/r`, bare: BOB, username: 'bob', available: true, priority: 0, lastPresence: parseXml('<presence/>') as Element, directed: undefined, deliver: () => true, pace: () => {}, open: true } as unknown as PresenceSession;
  const state = async () => roster.state('bob', SERVICE);
  return { roster, presence, session, probes, state };
}

const stanza = (xml: string) => parseXml(xml) as Element;

test("an approval of the service's request marks the presence it sends as new; the same approval again does not", async (t) => {
  const { roster, presence, session, probes, state } = setUp(t);
  // Bob asked the service (none+out), it approved (to), then asked back (to+in).
  await roster.transition('bob', SERVICE, OUTBOUND.subscribe, { max: 100 });
  await roster.transition('bob', SERVICE, INBOUND.subscribed, { max: 100 });
  await roster.transition('bob', SERVICE, INBOUND.subscribe, { max: 100 });
  t.is(await state(), 'to+in');
  await presence.fromClient(stanza(`<presence to='${SERVICE}' type='subscribed'/>`), session, parseJid(SERVICE));
  t.is(await state(), 'both');
  t.deepEqual(probes.splice(0), [{ to: SERVICE, arriving: true }], 'the approval: his presence, new to the service');
  await presence.fromClient(stanza(`<presence to='${SERVICE}' type='subscribed'/>`), session, parseJid(SERVICE));
  t.is(await state(), 'both');
  t.deepEqual(probes.splice(0), [{ to: SERVICE, arriving: false }], 'repeated: his presence again (§3.1.5), nothing new');
});

test("a request the user already approved is answered by the server with the user's presence, not marked new (RFC 6121 §3.1.3)", async (t) => {
  const { roster, presence, probes, state } = setUp(t);
  for (const [table, what] of [[OUTBOUND.subscribe, 'asks'], [INBOUND.subscribed, 'approved'], [INBOUND.subscribe, 'asked back'], [OUTBOUND.subscribed, 'approves']] as const) {
    const r = await roster.transition('bob', SERVICE, table, { max: 100 });
    t.truthy(r, what);
  }
  t.is(await state(), 'both');
  await presence.fromService(stanza(`<presence from='${SERVICE}' to='${BOB}' type='subscribe'/>`), parseJid(BOB));
  t.deepEqual(probes.splice(0), [{ to: SERVICE, arriving: false }]);
});
