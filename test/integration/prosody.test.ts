// Federation with a real Prosody (Debian's prosody package), started by
// the test on loopback addresses of its own. Two pairs:
// - ours.example (certificate from a test CA, secure auth on) with
//   prosody.example (same CA, s2s_secure_auth = true): TLS both ways and
//   SASL EXTERNAL (XEP-0178) both ways;
// - lax.example (self-signed, XMPP_S2S_SECURE_AUTH=false) with
//   prosody2.example (self-signed, Prosody's default lax auth): dialback
//   (XEP-0220) both ways, keys verified by connecting back.
// Prosody's users are spoken for by a raw client on Prosody's c2s port,
// which also plays their client for PEP (XEP-0163): its caps answered to
// our server's question, our notifications received through Prosody.
// Prosody runs mod_vcard, so that vCards (XEP-0054) are read both ways;
// a Prosody user also asks for our users' private XML (XEP-0049), which is
// theirs alone.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testCa, issue, selfSigned } from '../helpers/pki.ts';
import { federation, loopbackAddresses } from '../helpers/s2s.ts';
import type { Federated } from '../helpers/s2s.ts';
import { startProsody } from '../helpers/prosody.ts';
import type { Prosody } from '../helpers/prosody.ts';
import { stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, fresh, isBody, isPresence, newAccount, newUser, push, ready, rosterOf } from '../helpers/im.ts';
import { announceCaps, answerCaps, capsPresence, isCapsQuery, isEventItem, publish, untilNotified } from '../helpers/pep.ts';
import type { Peer } from '../helpers/im.ts';
import type { Element } from 'ltx';

const dir = mkdtempSync(join(tmpdir(), 'xmpp-prosody-'));
const ca = testCa(dir, 'interop-ca');
const [oursAddr, laxAddr, prosodyAddr] = loopbackAddresses(3);
let ours: Federated;
let lax: Federated;
let prosody: Prosody;
let stop: () => Promise<void>;
const USERS: Record<string, string> = Object.fromEntries(['pat', 'pam', 'pia', 'pol', 'pem', 'pip', 'pvc', 'ppx'].map((u) => [u, `${u}-pw`]));

test.before(async () => {
  prosody = await startProsody({
    dir: join(dir, 'prosody'),
    address: prosodyAddr,
    hosts: { 'ours.example': oursAddr, 'lax.example': laxAddr },
    cafile: ca.cert,
    modules: ['vcard'],
    vhosts: [
      { domain: 'prosody.example', cert: issue(dir, ca, 'prosody.example', { dns: ['prosody.example'] }), secureAuth: true, users: USERS },
      { domain: 'prosody2.example', cert: selfSigned(dir, 'prosody2.example'), users: USERS },
    ],
  });
  const f = await federation(
    [
      { domain: 'ours.example', cert: issue(dir, ca, 'ours.example', { dns: ['ours.example'] }) },
      { domain: 'lax.example', cert: selfSigned(dir, 'lax.example'), env: { XMPP_S2S_SECURE_AUTH: 'false' } },
    ],
    { env: { XMPP_TLS_CA: ca.cert }, addresses: [oursAddr, laxAddr], extra: { 'prosody.example': `${prosodyAddr}:5269`, 'prosody2.example': `${prosodyAddr}:5269` } },
  );
  [ours, lax] = f.servers;
  stop = f.stop;
});
test.after.always(async () => {
  await stop?.();
  await prosody?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A Prosody user logged in over Prosody's c2s, roster requested and initial presence sent. */
async function prosodyUser(t: ExecutionContext, name: string, domain = 'prosody.example', resource = 'p'): Promise<Peer> {
  const p = await connect(t, prosody.c2sPort, name, resource, `${name}@${domain} logging in to Prosody`, domain);
  await ready(p);
  return p;
}

async function iq(p: Peer, to: string | undefined, payload: string, type: 'get' | 'set' = 'get'): Promise<Element> {
  const id = uid('iq');
  return within(p.c.request(`<iq type='${type}' id='${id}'${to ? ` to='${to}'` : ''}>${payload}</iq>`, id), WAIT, `${p.jid}: iq ${type} to ${to ?? 'its account'}`);
}

function ok(t: ExecutionContext, res: Element, what: string): void {
  t.is(res.attrs.type, 'result', `${what}: ${res.toString()}`);
}

/** iq requests (get, set) that reached `p`'s client from index `from` on. */
const requestsTo = (p: Peer, from: number) => p.c.items.slice(from).filter((it) => it.kind === 'el' && it.el.name === 'iq' && (it.el.attrs.type === 'get' || it.el.attrs.type === 'set'));

test.serial('messages both ways with Prosody, to full and bare JIDs (TLS and SASL EXTERNAL between the servers)', async (t) => {
  const me = await newUser(t, ours.server, 'me');
  const pat = await prosodyUser(t, 'pat');
  me.c.send(`<message to='${pat.jid}' type='chat'><body>hello prosody</body></message>`);
  t.is((await expect(pat, 'our message at Prosody', isBody('hello prosody'))).attrs.from, me.jid);
  pat.c.send(`<message to='${me.bare}' type='chat'><body>hello from prosody</body></message>`);
  t.is((await expect(me, "Prosody's message", isBody('hello from prosody'))).attrs.from, pat.jid);
  // Both streams were authenticated with EXTERNAL, as Prosody's log says: ours to it, and its to us.
  t.truthy(await prosody.waitForLog(/Accepting SASL EXTERNAL identity from ours\.example/, WAIT));
  t.truthy(await prosody.waitForLog(/Initiating SASL EXTERNAL with ours\.example/, WAIT));
});

test.serial('a subscription with a Prosody user: states, presence both ways, probes at login, unavailable at logout', async (t) => {
  const me = await newUser(t, ours.server, 'me');
  const pam = await prosodyUser(t, 'pam');
  let mf = me.c.items.length;
  me.c.send(`<presence to='${pam.bare}' type='subscribe'/>`);
  mf = await push(t, me, pam.bare, 'none', 'subscribe', mf);
  await expect(pam, 'our request at Prosody', isPresence(me.bare, 'subscribe'));
  pam.c.send(`<presence to='${me.bare}' type='subscribed'/>`);
  await expect(me, "Prosody's approval", isPresence(pam.bare, 'subscribed'), mf);
  mf = await push(t, me, pam.bare, 'to', undefined, mf);
  await expect(me, "pam's presence after approving", isPresence(pam.jid), mf);
  // And back: pam subscribes to us, we approve.
  const pf = pam.c.items.length;
  pam.c.send(`<presence to='${me.bare}' type='subscribe'/>`);
  await expect(me, "pam's request", isPresence(pam.bare, 'subscribe'), mf);
  me.c.send(`<presence to='${pam.bare}' type='subscribed'/>`);
  await push(t, me, pam.bare, 'both', undefined, mf);
  await expect(pam, 'our presence after approving', isPresence(me.jid), pf);
  t.deepEqual((await rosterOf(me)).filter((i) => i.attrs.jid === pam.bare).map((i) => i.attrs.subscription), ['both']);
  // Our second resource logs in: its probe brings pam's presence from Prosody (RFC 6121 §4.3).
  const me2 = await connect(t, ours.server.c2sPort, me.name, 'second', 'second resource', 'ours.example');
  await ready(me2);
  await expect(me2, "pam's presence, probed at login", isPresence(pam.jid));
  // Prosody probes us when pam logs in again: our presence comes back.
  const pam2 = await prosodyUser(t, 'pam', 'prosody.example', 'again');
  await expect(pam2, 'our presence, probed by Prosody', isPresence(me.jid));
  // We log out: Prosody's resources see us go.
  const f1 = pam.c.items.length;
  const f2 = pam2.c.items.length;
  me.c.send('</stream:stream>');
  await expect(pam, 'our unavailable at Prosody', isPresence(me.jid, 'unavailable'), f1);
  await expect(pam2, 'our unavailable at Prosody', isPresence(me.jid, 'unavailable'), f2);
  // And pam's going reaches our remaining resource.
  const m2 = me2.c.items.length;
  pam.c.send('</stream:stream>');
  await expect(me2, "pam's unavailable", isPresence(pam.jid, 'unavailable'), m2);
});

test.serial('ping and disco across, both ways', async (t) => {
  const me = await newUser(t, ours.server, 'me');
  const pia = await prosodyUser(t, 'pia');
  t.is((await iq(me, 'prosody.example', "<ping xmlns='urn:xmpp:ping'/>")).attrs.type, 'result');
  const info = await iq(me, 'prosody.example', "<query xmlns='http://jabber.org/protocol/disco#info'/>");
  t.true(info.getChild('query')!.getChildren('identity').some((i) => i.attrs.category === 'server'));
  t.is((await iq(pia, 'ours.example', "<ping xmlns='urn:xmpp:ping'/>")).attrs.type, 'result');
  const ourInfo = await iq(pia, 'ours.example', "<query xmlns='http://jabber.org/protocol/disco#info'/>");
  t.is(ourInfo.attrs.type, 'result');
  t.true(ourInfo.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === 'urn:xmpp:ping'));
  // Ping of an account's bare JID at each end.
  t.is((await iq(pia, me.bare, "<ping xmlns='urn:xmpp:ping'/>")).attrs.type, 'result');
  const unknown = await iq(pia, 'nobody@ours.example/x', "<ping xmlns='urn:xmpp:ping'/>");
  t.is(stanzaError(unknown).condition, 'service-unavailable');
  await barrier(me, 0);
});

test.serial('dialback with Prosody: self-signed certificates, lax auth on both sides, messages both ways', async (t) => {
  const me = await newUser(t, lax.server, 'me');
  const pol = await prosodyUser(t, 'pol', 'prosody2.example');
  me.c.send(`<message to='${pol.jid}' type='chat'><body>over dialback</body></message>`);
  t.is((await expect(pol, 'our message at Prosody, over dialback', isBody('over dialback'))).attrs.from, me.jid);
  pol.c.send(`<message to='${me.bare}' type='chat'><body>dialback back</body></message>`);
  t.is((await expect(me, "Prosody's message, over dialback", isBody('dialback back'))).attrs.from, pol.jid);
  // Prosody's log: it verified our key by asking us (its stream to us), and we verified its key the same way.
  t.truthy(await prosody.waitForLog(/Received\[s2sin_unauthed\]: <(db:)?result [^>]*from='lax\.example'/, WAIT));
  t.truthy(await prosody.waitForLog(/Sending\[s2sin_unauthed\]: <db:verify [^>]*to='lax\.example'[^>]*type='valid'|Sending\[s2sin_unauthed\]: <db:verify [^>]*type='valid'[^>]*to='lax\.example'/, WAIT));
  t.truthy(await prosody.waitForLog(/connection prosody2\.example->lax\.example is now authenticated/, WAIT));
});

test.serial('ours with secure auth on does not accept Prosody with a self-signed certificate: remote-server-not-found', async (t) => {
  const me = await newUser(t, ours.server, 'me');
  const id = uid('m');
  me.c.send(`<message to='pem@prosody2.example' id='${id}' type='chat'><body>not to you</body></message>`);
  const err = await expect(me, 'the error', (el) => el.attrs.id === id && el.attrs.type === 'error');
  t.is(stanzaError(err).condition, 'remote-server-not-found');
});

test.serial("PEP to a Prosody user (XEP-0163 §4.3): its client's caps asked over the federation, notifications and the last item to its resources", async (t) => {
  const me = await newUser(t, ours.server, 'me');
  const pip = await prosodyUser(t, 'pip');
  // Presence both ways (RFC 6121 §3).
  let mf = me.c.items.length;
  me.c.send(`<presence to='${pip.bare}' type='subscribe'/>`);
  mf = await push(t, me, pip.bare, 'none', 'subscribe', mf);
  await expect(pip, 'our request at Prosody', isPresence(me.bare, 'subscribe'));
  pip.c.send(`<presence to='${me.bare}' type='subscribed'/>`);
  mf = await push(t, me, pip.bare, 'to', undefined, mf);
  pip.c.send(`<presence to='${me.bare}' type='subscribe'/>`);
  await expect(me, "pip's request", isPresence(pip.bare, 'subscribe'), mf);
  me.c.send(`<presence to='${pip.bare}' type='subscribed'/>`);
  await push(t, me, pip.bare, 'both', undefined, mf);
  // pip's client says, in its caps, that it wants tunes; our server asks it (through Prosody) what its ver means.
  const feats = ['urn:test:tune+notify', 'urn:test:probe+notify'];
  const asked = announceCaps(pip, feats);
  const q = await expect(pip, 'our caps query, through Prosody', isCapsQuery);
  t.is(q.attrs.from, 'ours.example');
  await untilNotified(me, pip, 'urn:test:probe');
  const pf = pip.c.items.length;
  t.is((await publish(me, 'urn:test:tune', `<tune xmlns='urn:test'><title>over there</title></tune>`, { id: 't1' })).attrs.type, 'result');
  const ev = await expect(pip, 'the notification, through Prosody', isEventItem(me.bare, 'urn:test:tune', 't1'), pf);
  t.is(ev.attrs.to, pip.jid);
  // Another resource of pip's, same client: its last item at its first presence, its ver not asked again.
  const pip2 = await connect(t, prosody.c2sPort, 'pip', 'second', 'pip/second logging in to Prosody', 'prosody.example');
  answerCaps(pip2, feats, 0);
  await ready(pip2, capsPresence(feats));
  const last = await expect(pip2, 'the last item at its first presence', isEventItem(me.bare, 'urn:test:tune', 't1'));
  t.is(last.attrs.to, pip2.jid);
  t.is(asked.asked, 1, 'the ver was asked once');
  t.false(pip2.c.items.some((it) => it.kind === 'el' && isCapsQuery(it.el)), 'nor of the second resource');
});

const VCARD_GET = "<vCard xmlns='vcard-temp'/>";
const fnOf = (res: Element) => res.getChild('vCard', 'vcard-temp')?.getChildText('FN');

test.serial("vCards with Prosody (XEP-0054 §3.3): its user reads ours as stored, answered by our server; none and no account get the same error; setting ours is forbidden (§3.2); ours reads its user's", async (t) => {
  const me = await newUser(t, ours.server, 'me');
  const blank = `${await newAccount(ours.server, 'blank')}@ours.example`;
  const pvc = await prosodyUser(t, 'pvc');
  ok(t, await iq(me, undefined, `<vCard xmlns='vcard-temp'><FN>Me &amp; Co</FN><NICKNAME>mee</NICKNAME><DESC>é &lt;x&gt;</DESC></vCard>`, 'set'), 'our vCard set');
  const mf = me.c.items.length;
  const got = await iq(pvc, me.bare, VCARD_GET);
  ok(t, got, "Prosody's user reads ours");
  t.is(got.attrs.from, me.bare);
  t.is(fnOf(got), 'Me & Co');
  t.is(got.getChild('vCard', 'vcard-temp')!.getChildText('NICKNAME'), 'mee');
  t.is(got.getChild('vCard', 'vcard-temp')!.getChildText('DESC'), 'é <x>');
  // §3.3: an account without a vCard and one that does not exist: the same error, so that neither is told apart.
  const none = await iq(pvc, blank, VCARD_GET);
  t.deepEqual(stanzaError(none), { type: 'cancel', condition: 'service-unavailable', by: undefined }, none.toString());
  const nobody = await iq(pvc, `${fresh('nobody')}@ours.example`, VCARD_GET);
  t.deepEqual(stanzaError(nobody), stanzaError(none), 'no account: as for no vCard');
  t.is(nobody.getChild('error')!.toString(), none.getChild('error')!.toString(), 'the very same <error/>');
  // §3.2: only the account's own clients set its vCard.
  const forged = await iq(pvc, me.bare, `<vCard xmlns='vcard-temp'><FN>Not me</FN></vCard>`, 'set');
  t.deepEqual(stanzaError(forged), { type: 'auth', condition: 'forbidden', by: undefined }, forged.toString());
  t.is(fnOf(await iq(me, undefined, VCARD_GET)), 'Me & Co', 'our vCard unchanged');
  t.deepEqual(requestsTo(me, mf), [], "our server answered for the account: its client saw no request");

  // The other way: our user reads a Prosody user's vCard, the request and its answer over the federation.
  ok(t, await iq(pvc, undefined, `<vCard xmlns='vcard-temp'><FN>Prosody's Pvc</FN></vCard>`, 'set'), "the Prosody user's vCard set at Prosody");
  const theirs = await iq(me, pvc.bare, VCARD_GET);
  ok(t, theirs, "ours reads the Prosody user's");
  t.is(theirs.attrs.from, pvc.bare);
  t.is(fnOf(theirs), "Prosody's Pvc");
  // Prosody's error for an account it does not have comes back to our client as Prosody sent it.
  const unknown = await iq(me, 'nobody@prosody.example', VCARD_GET);
  t.is(unknown.attrs.type, 'error', unknown.toString());
  t.is(unknown.attrs.from, 'nobody@prosody.example');
});

test.serial("private XML (XEP-0049) of ours is its account's alone: a Prosody user's get and set to it are forbidden (§3), nothing read or changed", async (t) => {
  const me = await newUser(t, ours.server, 'me');
  const ppx = await prosodyUser(t, 'ppx');
  const query = (inner: string) => `<query xmlns='jabber:iq:private'>${inner}</query>`;
  ok(t, await iq(me, undefined, query(`<prefs xmlns='urn:test:prefs'><secret>s3cr3t</secret></prefs>`), 'set'), 'our private XML set');
  const mf = me.c.items.length;
  const read = await iq(ppx, me.bare, query(`<prefs xmlns='urn:test:prefs'/>`));
  t.deepEqual(stanzaError(read), { type: 'auth', condition: 'forbidden', by: undefined }, read.toString());
  t.is(read.attrs.from, me.bare);
  t.false(read.toString().includes('s3cr3t'), 'nothing of it in the answer');
  const write = await iq(ppx, me.bare, query(`<prefs xmlns='urn:test:prefs'><secret>theirs</secret></prefs>`), 'set');
  t.deepEqual(stanzaError(write), { type: 'auth', condition: 'forbidden', by: undefined }, write.toString());
  const mine = await iq(me, undefined, query(`<prefs xmlns='urn:test:prefs'/>`));
  ok(t, mine, 'our own get');
  t.is(mine.getChild('query', 'jabber:iq:private')?.getChild('prefs', 'urn:test:prefs')?.getChildText('secret'), 's3cr3t', 'unchanged');
  t.deepEqual(requestsTo(me, mf), [], 'our client saw no request');
});
