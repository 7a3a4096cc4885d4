// XEP-0050 ad-hoc commands and XEP-0133 service administration over real
// sockets with real TLS: discovery per role (an admin sees every command, a
// user none), multi-stage sessions (next, prev, complete), cancel, the
// errors of XEP-0050 §6, the bounds on open sessions, and every admin
// command with its effect seen from the affected users' own streams; and,
// driven directly (the protocol cannot make the steps of several requests
// run before the first one's answer is out), the bound on announcements.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { NS_DISCO_INFO, NS_DISCO_ITEMS, NS_STREAMS_ERR, childEls, plainOutcome, stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, connect, expect, fresh, ready } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { ConfigError, adminsOf, loadConfig } from '../../src/config/index.ts';
import { ANNOUNCEMENTS_AT_ONCE, adminCommands } from '../../src/modules/admin.ts';
import { readForm, type StageRequest } from '../../src/modules/adhoc.ts';
import type { Session } from '../../src/session/session.ts';
import { parse as parseXml } from 'ltx';

const NS_COMMANDS = 'http://jabber.org/protocol/commands';
const NS_ADMIN = 'http://jabber.org/protocol/admin';
const ADMIN_NODES = ['add-user', 'delete-user', 'change-user-password', 'end-user-session', 'user-stats', 'get-online-users-list', 'get-online-users-num', 'get-registered-users-num', 'announce'].map((n) => `${NS_ADMIN}#${n}`);

let server: TestServer;
const BOSS = `boss${process.pid}`;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '1', XMPP_ADMINS: `${BOSS}@localhost` });
  await server.addUser(BOSS, `${BOSS}-pw`);
});
test.after.always(async () => {
  await server?.stop();
});

async function admin(t: ExecutionContext, resource = fresh('a')): Promise<Peer> {
  return connect(t, server.c2sPort, BOSS, resource);
}

async function user(t: ExecutionContext, base: string, resource = 'r'): Promise<Peer> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  const p = await connect(t, server.c2sPort, name, resource);
  await ready(p);
  return p;
}

async function iq(p: Peer, inner: string, type = 'get'): Promise<Element> {
  const id = uid('iq');
  return within(p.c.request(`<iq type='${type}' id='${id}' to='localhost'>${inner}</iq>`, id), WAIT, `${p.jid}: ${inner.slice(0, 80)}`);
}

function submit(fields: Record<string, string | string[]>): string {
  const f = Object.entries(fields).map(([k, v]) => `<field var='${k}'>${(Array.isArray(v) ? v : [v]).map((x) => `<value>${x}</value>`).join('')}</field>`).join('');
  return `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>${NS_ADMIN}</value></field>${f}</x>`;
}

/** Sends a <command/>; returns the iq answer and its <command/>, if any. */
async function command(p: Peer, name: string, opts: { action?: string; sessionid?: string; form?: string; node?: string } = {}): Promise<{ iq: Element; cmd: Element | undefined }> {
  const node = opts.node ?? `${NS_ADMIN}#${name}`;
  const attrs = `node='${node}'${opts.action ? ` action='${opts.action}'` : ''}${opts.sessionid ? ` sessionid='${opts.sessionid}'` : ''}`;
  const res = await iq(p, `<command xmlns='${NS_COMMANDS}' ${attrs}>${opts.form ?? ''}</command>`, 'set');
  return { iq: res, cmd: res.getChild('command', NS_COMMANDS) };
}

/** Runs a one-form command: execute, then submit `fields`; returns the final answer. */
async function run(p: Peer, name: string, fields: Record<string, string | string[]>, action?: string) {
  const first = await command(p, name);
  if (first.iq.attrs.type !== 'result') throw new Error(first.iq.toString());
  return command(p, name, { sessionid: first.cmd!.attrs.sessionid, form: submit(fields), action });
}

/** The XEP-0050 §6 specific condition of an error answer. */
const specific = (el: Element) => childEls(el.getChild('error')!).find((c) => c.attrs.xmlns === NS_COMMANDS)?.name;
const values = (x: Element | undefined, name: string) => x?.getChildren('field').find((f) => f.attrs.var === name)?.getChildren('value').map((v) => v.getText()) ?? [];
const actionsOf = (cmd: Element) => {
  const a = cmd.getChild('actions')!;
  return { execute: a.attrs.execute, allowed: childEls(a).map((c) => c.name) };
};

/** Waits for a stream error on p's stream (from item `from`) and the connection to close; its condition. */
async function streamEnded(p: Peer, from: number): Promise<string | undefined> {
  const el = await expect(p, 'a stream error', (e) => e.name === 'stream:error', from);
  await within(p.c.closed, WAIT, `${p.jid}: connection closed`);
  return childEls(el).find((c) => c.attrs.xmlns === NS_STREAMS_ERR && c.name !== 'text')?.name;
}

test('discovery: the commands feature, every admin command listed for an admin and none for a user, command nodes', async (t) => {
  const [boss, alice] = await Promise.all([admin(t), user(t, 'alice')]);
  const info = await iq(alice, `<query xmlns='${NS_DISCO_INFO}'/>`);
  t.true(info.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === NS_COMMANDS), 'XEP-0050 §2.1: the feature on the server');

  const listed = await iq(boss, `<query xmlns='${NS_DISCO_ITEMS}' node='${NS_COMMANDS}'/>`);
  const items = listed.getChild('query', NS_DISCO_ITEMS)!.getChildren('item');
  t.deepEqual(items.map((i) => i.attrs.node).sort(), [...ADMIN_NODES].sort());
  t.true(items.every((i) => i.attrs.jid === 'localhost' && !!i.attrs.name));

  const none = await iq(alice, `<query xmlns='${NS_DISCO_ITEMS}' node='${NS_COMMANDS}'/>`);
  t.is(none.attrs.type, 'result');
  t.deepEqual(none.getChild('query', NS_DISCO_ITEMS)!.getChildren('item'), [], 'a user sees only what it may run: nothing');

  const node = await iq(boss, `<query xmlns='${NS_DISCO_INFO}' node='${NS_ADMIN}#add-user'/>`);
  const q = node.getChild('query', NS_DISCO_INFO)!;
  t.is(q.getChild('identity')!.attrs.category, 'automation');
  t.is(q.getChild('identity')!.attrs.type, 'command-node');
  t.deepEqual(q.getChildren('feature').map((f) => f.attrs.var).sort(), [NS_COMMANDS, 'jabber:x:data'].sort());
  t.is(stanzaError(await iq(alice, `<query xmlns='${NS_DISCO_INFO}' node='${NS_ADMIN}#add-user'/>`)).condition, 'forbidden');
  t.is(stanzaError(await iq(boss, `<query xmlns='${NS_DISCO_INFO}' node='urn:nothing'/>`)).condition, 'item-not-found');
});

test('errors of XEP-0050 §4.6: forbidden, item-not-found, malformed-action, bad-action, bad-sessionid, session-expired, a session bound to its full JID', async (t) => {
  const [boss, other, alice] = await Promise.all([admin(t), admin(t), user(t, 'alice')]);
  const denied = await command(alice, 'get-registered-users-num');
  t.is(stanzaError(denied.iq).condition, 'forbidden');
  t.is(stanzaError((await command(boss, '', { node: `${NS_ADMIN}#no-such` })).iq).condition, 'item-not-found');
  const malformed = await command(boss, 'add-user', { action: 'dance' });
  t.is(stanzaError(malformed.iq).condition, 'bad-request');
  t.is(specific(malformed.iq), 'malformed-action');
  const noSession = await command(boss, 'add-user', { action: 'next' });
  t.is(stanzaError(noSession.iq).condition, 'bad-request');
  t.is(specific(noSession.iq), 'bad-action');
  const unknown = await command(boss, 'add-user', { sessionid: 'add-user:nope', form: submit({}) });
  t.is(specific(unknown.iq), 'bad-sessionid');

  const started = await command(boss, 'add-user');
  const sid = started.cmd!.attrs.sessionid;
  t.is(started.cmd!.attrs.status, 'executing');
  // §3.3: the session is the requester's, not its account's other resources'.
  const stolen = await command(other, 'add-user', { sessionid: sid, form: submit({ accountjid: `x@localhost`, password: 'p' }) });
  t.is(specific(stolen.iq), 'bad-sessionid');
  // Another command's session is no session of this one.
  t.is(specific((await command(boss, 'change-user-password', { sessionid: sid, form: submit({}) })).iq), 'bad-sessionid');
  // An action the stage does not offer.
  t.deepEqual(actionsOf(started.cmd!), { execute: 'complete', allowed: ['complete'] });
  const next = await command(boss, 'add-user', { sessionid: sid, action: 'next', form: submit({}) });
  t.is(specific(next.iq), 'bad-action');
  const prev = await command(boss, 'add-user', { sessionid: sid, action: 'prev' });
  t.is(specific(prev.iq), 'bad-action', 'no stage before the first');
  // Refused actions leave the stage open: it completes.
  const name = fresh('late');
  const done = await command(boss, 'add-user', { sessionid: sid, form: submit({ accountjid: `${name}@localhost`, password: 'pw1' }) });
  t.is(done.cmd?.attrs.status, 'completed', done.iq.toString());
  // §4.6: a session that is over is session-expired for its requester, and still no session of another's.
  const over = await command(boss, 'add-user', { sessionid: sid, form: submit({}) });
  t.is(stanzaError(over.iq).condition, 'not-allowed');
  t.is(stanzaError(over.iq).type, 'cancel');
  t.is(specific(over.iq), 'session-expired', 'a completed session is over');
  t.is(specific((await command(other, 'add-user', { sessionid: sid, form: submit({}) })).iq), 'bad-sessionid');
  // A form that lacks a required field: refused, and the session ends with it.
  const again = await command(boss, 'add-user');
  const lacking = await command(boss, 'add-user', { sessionid: again.cmd!.attrs.sessionid, form: submit({ password: 'p' }) });
  t.is(stanzaError(lacking.iq).condition, 'bad-request');
  t.is(specific(lacking.iq), 'bad-payload');
  t.is(specific((await command(boss, 'add-user', { sessionid: again.cmd!.attrs.sessionid, form: submit({ accountjid: `${fresh('z')}@localhost`, password: 'p' }) })).iq), 'session-expired');
  // A canceled one too.
  const third = await command(boss, 'add-user');
  t.is((await command(boss, 'add-user', { sessionid: third.cmd!.attrs.sessionid, action: 'cancel' })).cmd?.attrs.status, 'canceled');
  t.is(specific((await command(boss, 'add-user', { sessionid: third.cmd!.attrs.sessionid, form: submit({}) })).iq), 'session-expired');
});

test('a session idle past XMPP_ADHOC_IDLE_MS ends: its id gets session-expired (§4.6), and the command starts again', async (t) => {
  const IDLE_MS = 300;
  const quick = await startTestServer({ XMPP_WORKERS: '1', XMPP_ADMINS: `${BOSS}@localhost`, XMPP_ADHOC_IDLE_MS: String(IDLE_MS) });
  t.teardown(() => quick.stop());
  await quick.addUser(BOSS, `${BOSS}-pw`);
  const boss = await connect(t, quick.c2sPort, BOSS, 'idle');
  const started = await command(boss, 'add-user');
  const sid = started.cmd!.attrs.sessionid;
  // The idle time is what the test is about: wait it out.
  await new Promise((r) => setTimeout(r, IDLE_MS + 200));
  const late = await command(boss, 'add-user', { sessionid: sid, form: submit({ accountjid: `${fresh('late')}@localhost`, password: 'p' }) });
  t.is(stanzaError(late.iq).condition, 'not-allowed');
  t.is(specific(late.iq), 'session-expired');
  t.is(specific((await command(boss, 'add-user', { sessionid: 'add-user:never-issued', form: submit({}) })).iq), 'bad-sessionid');
  const again = await command(boss, 'add-user');
  t.is(again.cmd?.attrs.status, 'executing');
});

test('multi-stage: delete-user asks, confirms, goes back with prev, and completes; the user is gone and its session ended', async (t) => {
  const [boss, victim] = await Promise.all([admin(t), user(t, 'victim')]);
  const first = await command(boss, 'delete-user');
  const sid = first.cmd!.attrs.sessionid;
  t.deepEqual(actionsOf(first.cmd!), { execute: 'next', allowed: ['next', 'complete'] });
  t.deepEqual(values(first.cmd!.getChild('x', 'jabber:x:data'), 'FORM_TYPE'), [NS_ADMIN]);
  const confirm = await command(boss, 'delete-user', { sessionid: sid, form: submit({ accountjids: victim.bare }) });
  t.is(confirm.cmd!.attrs.status, 'executing');
  t.deepEqual(actionsOf(confirm.cmd!), { execute: 'complete', allowed: ['prev', 'complete'] });
  t.deepEqual(values(confirm.cmd!.getChild('x', 'jabber:x:data'), 'accountjids'), [victim.bare]);
  t.is(confirm.cmd!.getChild('note')?.attrs.type, 'warn');
  // §3.4.2: back to the first stage, its form again.
  const back = await command(boss, 'delete-user', { sessionid: sid, action: 'prev' });
  t.is(back.cmd!.attrs.status, 'executing');
  t.deepEqual(actionsOf(back.cmd!), { execute: 'next', allowed: ['next', 'complete'] });
  t.truthy(back.cmd!.getChild('x', 'jabber:x:data')!.getChildren('field').find((f) => f.attrs.var === 'accountjids' && f.getChild('required')));
  await command(boss, 'delete-user', { sessionid: sid, action: 'next', form: submit({ accountjids: victim.bare }) });
  const from = victim.c.items.length;
  const done = await command(boss, 'delete-user', { sessionid: sid, action: 'complete' });
  t.is(done.cmd?.attrs.status, 'completed', done.iq.toString());
  t.is(await streamEnded(victim, from), 'not-authorized', 'the removal path ends its sessions');
  t.is(await plainOutcome(server.c2sPort, victim.name, `${victim.name}-pw`), 'not-authorized');
  // 'complete' on the first stage deletes at once.
  const other = await user(t, 'other');
  const quick = await run(boss, 'delete-user', { accountjids: other.bare }, 'complete');
  t.is(quick.cmd?.attrs.status, 'completed');
  t.is(await plainOutcome(server.c2sPort, other.name, `${other.name}-pw`), 'not-authorized');
  const missing = await run(boss, 'delete-user', { accountjids: `nobody${process.pid}@localhost` }, 'complete');
  t.is(stanzaError(missing.iq).condition, 'item-not-found');
});

// Serial: the bound is the account's, which the other tests share.
test.serial('cancel ends a session; sessions are bounded per account, and a cancelled one frees its place', async (t) => {
  const boss = await admin(t);
  const started = await command(boss, 'announce');
  const canceled = await command(boss, 'announce', { sessionid: started.cmd!.attrs.sessionid, action: 'cancel' });
  t.is(canceled.cmd?.attrs.status, 'canceled');
  t.is(specific((await command(boss, 'announce', { sessionid: started.cmd!.attrs.sessionid, form: submit({ announcement: 'x' }) })).iq), 'session-expired');
  const sids: string[] = [];
  for (let i = 0; i < 8; i++) {
    const r = await command(boss, 'add-user');
    t.is(r.cmd?.attrs.status, 'executing');
    sids.push(r.cmd!.attrs.sessionid);
  }
  const refused = await command(boss, 'add-user');
  t.is(stanzaError(refused.iq).condition, 'resource-constraint');
  t.is(stanzaError(refused.iq).type, 'wait');
  await command(boss, 'add-user', { sessionid: sids[0], action: 'cancel' });
  const freed = await command(boss, 'add-user');
  t.is(freed.cmd?.attrs.status, 'executing');
  for (const sid of [...sids.slice(1), freed.cmd!.attrs.sessionid]) t.is((await command(boss, 'add-user', { sessionid: sid, action: 'cancel' })).cmd?.attrs.status, 'canceled');
});

test('add-user and change-user-password: validated forms, conflict, the new password logs in and the old one does not', async (t) => {
  const boss = await admin(t);
  const name = fresh('added');
  const added = await run(boss, 'add-user', { accountjid: `${name}@localhost`, password: 'first', 'password-verify': 'first' });
  t.is(added.cmd?.attrs.status, 'completed');
  t.is(await plainOutcome(server.c2sPort, name, 'first'), 'success');
  t.is(stanzaError((await run(boss, 'add-user', { accountjid: `${name}@localhost`, password: 'x' })).iq).condition, 'conflict');
  t.is(stanzaError((await run(boss, 'add-user', { accountjid: `y${name}@localhost`, password: 'a', 'password-verify': 'b' })).iq).condition, 'bad-request');
  t.is(stanzaError((await run(boss, 'add-user', { accountjid: `${name}@elsewhere.example`, password: 'a' })).iq).condition, 'bad-request', 'a JID of another domain');
  t.is(stanzaError((await run(boss, 'add-user', { accountjid: `${name}@localhost/res`, password: 'a' })).iq).condition, 'bad-request', 'a full JID');

  const changed = await run(boss, 'change-user-password', { accountjid: `${name}@localhost`, password: 'second' });
  t.is(changed.cmd?.attrs.status, 'completed');
  t.is(await plainOutcome(server.c2sPort, name, 'second'), 'success');
  t.is(await plainOutcome(server.c2sPort, name, 'first'), 'not-authorized');
  t.is(stanzaError((await run(boss, 'change-user-password', { accountjid: `ghost${process.pid}@localhost`, password: 'x' })).iq).condition, 'item-not-found');
});

test('end-user-session: a full JID ends that session only, a bare JID every session of the account', async (t) => {
  const boss = await admin(t);
  const a = await user(t, 'kicked', 'one');
  const a2 = await connect(t, server.c2sPort, a.name, 'two');
  const a3 = await connect(t, server.c2sPort, a.name, 'three');
  const from = a.c.items.length;
  const one = await run(boss, 'end-user-session', { accountjids: a.jid });
  t.is(one.cmd?.attrs.status, 'completed');
  t.is(await streamEnded(a, from), 'policy-violation');
  // The others live: they answer a ping.
  t.is((await iq(a2, `<ping xmlns='urn:xmpp:ping'/>`)).attrs.type, 'result');
  const [f2, f3] = [a2.c.items.length, a3.c.items.length];
  const all = await run(boss, 'end-user-session', { accountjids: a.bare });
  t.regex(all.cmd!.getChildText('note') ?? '', /^2 /);
  t.is(await streamEnded(a2, f2), 'policy-violation');
  t.is(await streamEnded(a3, f3), 'policy-violation');
  t.is(await plainOutcome(server.c2sPort, a.name, `${a.name}-pw`), 'success', 'the account stays');
});

// Serial: the numbers are the whole server's, which the other tests change.
test.serial('online and registered users: list, numbers, user statistics', async (t) => {
  const boss = await admin(t);
  const a = await user(t, 'on', 'desk');
  await connect(t, server.c2sPort, a.name, 'phone');
  const b = await user(t, 'on');
  const rid = uid('roster');
  t.is((await within(a.c.request(`<iq type='set' id='${rid}'><query xmlns='jabber:iq:roster'><item jid='${b.bare}'/></query></iq>`, rid), WAIT, 'roster set')).attrs.type, 'result');
  const listForm = await command(boss, 'get-online-users-list');
  t.deepEqual(listForm.cmd!.getChild('x', 'jabber:x:data')!.getChildren('field').find((f) => f.attrs.var === 'max_items')!.getChildren('option').map((o) => o.getChildText('value')), ['25', '50', '75', '100', '150', '200', 'none']);
  const listed = await command(boss, 'get-online-users-list', { sessionid: listForm.cmd!.attrs.sessionid, form: submit({ max_items: 'none' }) });
  const online = values(listed.cmd!.getChild('x', 'jabber:x:data'), 'onlineuserjids');
  for (const j of [a.bare, b.bare, `${BOSS}@localhost`]) t.true(online.includes(j), `${j} listed`);
  t.is(new Set(online).size, online.length, 'each user once, whatever its resources');
  const cut = await run(boss, 'get-online-users-list', { max_items: '1' });
  t.is(values(cut.cmd!.getChild('x', 'jabber:x:data'), 'onlineuserjids').length, 1);
  t.is(cut.cmd!.getChildText('note'), '1 shown; more users are online', 'the list stops at max_items, and says there are more');

  const num = await command(boss, 'get-online-users-num');
  t.is(num.cmd?.attrs.status, 'completed');
  t.is(Number(values(num.cmd!.getChild('x', 'jabber:x:data'), 'onlineusersnum')[0]), online.length);
  const reg = await command(boss, 'get-registered-users-num');
  const before = Number(values(reg.cmd!.getChild('x', 'jabber:x:data'), 'registeredusersnum')[0]);
  t.true(before >= 3);
  await server.addUser(fresh('count'), 'x');
  const after = Number(values((await command(boss, 'get-registered-users-num')).cmd!.getChild('x', 'jabber:x:data'), 'registeredusersnum')[0]);
  t.is(after, before + 1);

  const stats = await run(boss, 'user-stats', { accountjid: a.bare });
  const x = stats.cmd!.getChild('x', 'jabber:x:data');
  t.is(x?.attrs.type, 'result');
  t.deepEqual(values(x, 'onlineresources'), ['desk', 'phone']);
  t.deepEqual(values(x, 'rostersize'), ['1']);
  t.deepEqual(values(x, 'FORM_TYPE'), [NS_ADMIN]);
});

test('announce: a headline from the server reaches every online session', async (t) => {
  const boss = await admin(t);
  const a = await user(t, 'hear', 'one');
  const a2 = await connect(t, server.c2sPort, a.name, 'two');
  const b = await user(t, 'hear');
  const marks = [a, a2, b].map((p) => p.c.items.length);
  const text = `maintenance ${uid('ann')}`;
  const bossFrom = boss.c.items.length;
  const sent = await run(boss, 'announce', { announcement: [text, 'second line'] });
  t.is(sent.cmd?.attrs.status, 'completed');
  // The admin is answered before the announcement goes out: its own session, online too, gets it after the answer.
  const own = await expect(boss, "the announcement at the admin's own session", (e) => e.name === 'message' && (e.getChildText('body') ?? '').startsWith(text), bossFrom);
  const at = (el: Element) => boss.c.items.findIndex((it) => it.kind === 'el' && it.el === el);
  t.true(at(sent.iq) < at(own), 'the answer first, then the announcement');
  for (const [i, p] of [a, a2, b].entries()) {
    const m = await expect(p, 'the announcement', (e) => e.name === 'message' && (e.getChildText('body') ?? '').startsWith(text), marks[i]);
    t.is(m.attrs.from, 'localhost');
    t.is(m.attrs.type, 'headline');
    t.is(m.getChildText('body'), `${text}\nsecond line`);
  }
  t.is(stanzaError((await run(boss, 'announce', { announcement: 'x'.repeat(20_000) })).iq).condition, 'bad-request');
});

test('announce: requests accepted together count against the bound before any has started; a place is given back once its announcement is out', async (t) => {
  // The command's steps driven as the adhoc module drives them, for requests whose steps all run before the
  // first answer is out (its `after`, which starts the sending): each takes its place when it is accepted.
  const announce = adminCommands(new Set(['boss@localhost'])).find((c) => c.node.endsWith('#announce'))!;
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const routed: string[] = [];
  let allRouted!: () => void;
  const done = new Promise<void>((r) => (allRouted = r));
  const session = {
    jid: 'boss@localhost/desk',
    ctx: {
      config: { domain: 'localhost' },
      // Each announcement is under way until the gate opens.
      registry: { async *onlinePages() { await gate; yield ['someone@localhost/r']; } },
      router: { async routeFromServer(m: Element) { routed.push(m.getChildText('body')!); if (routed.length === ANNOUNCEMENTS_AT_ONCE) allRouted(); } },
    },
  } as unknown as Session;
  const req = (text: string): StageRequest => ({ session, action: 'complete', forms: [readForm(parseXml(submit({ announcement: text })) as Element)] });
  const step = async (text: string) => announce.step(req(text));
  const steps = await Promise.allSettled(Array.from({ length: ANNOUNCEMENTS_AT_ONCE + 2 }, (_, i) => step(`a${i}`)));
  const accepted = steps.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  t.is(accepted.length, ANNOUNCEMENTS_AT_ONCE, 'as many as the bound, though none had started');
  for (const s of steps.filter((x) => x.status === 'rejected')) t.is(((s as PromiseRejectedResult).reason as Error & { condition?: string }).condition, 'resource-constraint');
  for (const s of accepted) if (s.status === 'completed') s.after?.();
  // Under way: still none more.
  await t.throwsAsync(step('more'), { message: /other announcements are being sent/ });
  open();
  await done;
  // Each gives its place back as its sending ends (the turn after its last message).
  await new Promise((r) => setImmediate(r));
  const again = await step('later');
  t.is(again.status, 'completed');
  if (again.status === 'completed') again.after?.();
});

test('XMPP_ADMINS: bare JIDs of this domain, normalised; anything else stops the start with a ConfigError', (t) => {
  t.deepEqual([...adminsOf(loadConfig({ XMPP_ADMINS: 'Root@LocalHost, ops@localhost' }))], ['root@localhost', 'ops@localhost']);
  t.deepEqual([...adminsOf(loadConfig({}))], []);
  for (const bad of ['root@elsewhere.example', 'root@localhost/desk', 'localhost', 'a b@localhost@x']) {
    t.regex(t.throws(() => loadConfig({ XMPP_ADMINS: bad }), { instanceOf: ConfigError })!.message, /^XMPP_ADMINS/, bad);
  }
});
