// XEP-0115 verification (pep/caps.ts) on the XEP's own examples (§5.2 simple,
// §5.3 complex, with a data form), and the rejections of §5.4.
import test from 'ava';
import { type Element, parse } from 'ltx';
import { CapsCache, MAX_NOTIFY_BYTES, MAX_NOTIFY_NODES, capsOf, notifyNodes, verificationString, verifies } from '../../src/pep/caps.ts';
import { createHash } from 'node:crypto';
import { selfContained } from '../../src/modules/pep.ts';

const q = (inner: string) => parse(`<query xmlns='http://jabber.org/protocol/disco#info'>${inner}</query>`) as Element;
const FEATURES = ['http://jabber.org/protocol/caps', 'http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/disco#items', 'http://jabber.org/protocol/muc'];
const feats = (list: string[]) => list.map((f) => `<feature var='${f}'/>`).join('');

test('§5.2 simple generation example', (t) => {
  const query = q(`<identity category='client' type='pc' name='Exodus 0.9.1'/>${feats([...FEATURES].reverse())}`);
  t.is(verificationString(query), 'client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<');
  t.true(verifies({ hash: 'sha-1', ver: 'QgayPKawpkPSDYmwT/WM94uAlu0=' }, query));
  t.false(verifies({ hash: 'sha-1', ver: 'QgayPKawpkPSDYmwT/WM94uAlu1=' }, query));
  t.false(verifies({ hash: 'md5', ver: 'QgayPKawpkPSDYmwT/WM94uAlu0=' }, query), 'a hash function not known here');
});

test('§5.3 complex generation example (identities in two languages, a data form)', (t) => {
  const query = q(`<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/><identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>${feats(FEATURES)}
    <x xmlns='jabber:x:data' type='result'>
      <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
      <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
      <field var='os'><value>Mac</value></field>
      <field var='os_version'><value>10.5.1</value></field>
      <field var='software'><value>Psi</value></field>
      <field var='software_version'><value>0.11</value></field>
    </x>`);
  t.true(verifies({ hash: 'sha-1', ver: 'q07IKJEyjvHSyhy//CH0CxmKi8w=' }, query));
});

test('§5.4: duplicate identities or features, a FORM_TYPE that is not hidden, two forms of one type are rejected', (t) => {
  t.is(verificationString(q(`<identity category='client' type='pc'/><identity category='client' type='pc'/>`)), undefined);
  t.is(verificationString(q(feats(['a', 'a']))), undefined);
  t.is(verificationString(q(`<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>urn:x</value></field></x>`)), undefined);
  const form = `<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>urn:x</value></field></x>`;
  t.is(verificationString(q(form + form)), undefined);
  t.is(verificationString(q(`<x xmlns='jabber:x:data' type='result'><field var='a'><value>1</value></field></x>`)), '', 'a form without FORM_TYPE is ignored');
});

test('caps from presence, +notify nodes, and the bounded cache', (t) => {
  t.deepEqual(capsOf(parse(`<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>`) as Element), { hash: 'sha-1', node: 'n', ver: 'v' });
  t.is(capsOf(parse(`<presence><c xmlns='http://jabber.org/protocol/caps' node='n' ver='v'/></presence>`) as Element), undefined, 'legacy caps without hash');
  t.deepEqual([...notifyNodes(q(feats(['urn:xmpp:avatar:metadata+notify', 'urn:xmpp:ping', '+notify'])))!], ['urn:xmpp:avatar:metadata']);
  // Bounded: past MAX_NOTIFY_NODES, or a name too long, the answer gives none (and is not cached).
  t.is(notifyNodes(q(feats(Array.from({ length: MAX_NOTIFY_NODES + 1 }, (_, i) => `urn:n${i}+notify`)))), undefined);
  t.is(notifyNodes(q(feats([`${'n'.repeat(2000)}+notify`]))), undefined);
  // And past MAX_NOTIFY_BYTES of names in all (what one ver can make a cache, or Redis, keep).
  const long = (i: number) => `urn:${String(i).padStart(4, '0')}:${'n'.repeat(1000)}+notify`;
  const fit = Math.floor(MAX_NOTIFY_BYTES / (long(0).length - '+notify'.length));
  t.is(notifyNodes(q(feats(Array.from({ length: fit }, (_, i) => long(i)))))?.size, fit);
  t.is(notifyNodes(q(feats(Array.from({ length: fit + 1 }, (_, i) => long(i))))), undefined);
  const c = new CapsCache(2);
  c.set({ hash: 'sha-1', ver: 'a' }, new Set(['x']));
  c.set({ hash: 'sha-1', ver: 'b' }, new Set());
  t.truthy(c.get({ hash: 'SHA-1', ver: 'a' }));
  c.set({ hash: 'sha-1', ver: 'c' }, new Set());
  t.is(c.size, 2);
  t.is(c.get({ hash: 'sha-1', ver: 'b' }), undefined, 'the least recently used went');
  t.truthy(c.get({ hash: 'sha-1', ver: 'a' }));
});

test("a '<' inside a part is refused: another answer could hash the same (one identity's name holding the features)", (t) => {
  const honest = q(`<identity category='client' type='pc' name='C'/>${feats(['a+notify', 'b+notify'])}`);
  const ver = createHash('sha1').update(verificationString(honest)!, 'utf8').digest('base64');
  t.true(verifies({ hash: 'sha-1', ver }, honest));
  // The same string from one identity whose name swallows the features: no +notify at all.
  const forged = q(`<identity category='client' type='pc' name='C&lt;a+notify&lt;b+notify'/>`);
  t.is(verificationString(forged), undefined);
  t.false(verifies({ hash: 'sha-1', ver }, forged));
});

test('a payload stands alone: its own xmlns, and every prefix it uses declared inside it', (t) => {
  t.true(selfContained(parse(`<tune xmlns='http://jabber.org/protocol/tune'><artist>x</artist></tune>`) as Element));
  t.true(selfContained(parse(`<p xmlns='urn:a' xmlns:e='urn:e'><e:x e:y='1' xml:lang='en'/></p>`) as Element));
  t.false(selfContained(parse(`<p><x/></p>`) as Element), 'no xmlns of its own');
  const inherited = (parse(`<pubsub xmlns:e='urn:evil'><e:payload xmlns='urn:a' e:attr='1'/></pubsub>`) as Element).children[0] as Element;
  t.false(selfContained(inherited), 'a prefix declared only by an ancestor');
});
