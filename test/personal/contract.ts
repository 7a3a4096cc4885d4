// The personal data store's contract (personal/store.ts: vCards and private
// XML), run against every backend: SQLite (sqlite.test.ts) and PostgreSQL
// (postgres.test.ts).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { PersonalStore } from '../../src/personal/store.ts';
import { PrivateStorageFullError } from '../../src/personal/store.ts';

export type OpenPersonal = (t: ExecutionContext) => Promise<PersonalStore>;

const vcard = (fn: string) => ({ xml: `<vCard xmlns="vcard-temp"><FN>${fn}</FN></vCard>`, photoHash: '' });

export function personalStoreContract(label: string, open: OpenPersonal): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('a vCard is kept per account and replaced whole'), async (t) => {
    const s = await open(t);
    t.is(await s.vcard('alice'), undefined);
    await s.setVcard('alice', vcard('Alice'));
    await s.setVcard('bob', { xml: '<vCard xmlns="vcard-temp"><FN>Bob</FN></vCard>', photoHash: 'ab'.repeat(20) });
    t.deepEqual(await s.vcard('alice'), vcard('Alice'));
    await s.setVcard('alice', vcard('Alice \u00e9 <&>'));
    t.deepEqual(await s.vcard('alice'), vcard('Alice \u00e9 <&>'));
    t.is((await s.vcard('bob'))?.photoHash, 'ab'.repeat(20));
    t.is(await s.photoHash('bob'), 'ab'.repeat(20), 'the hash alone');
    t.is(await s.photoHash('alice'), '', 'a vCard without a photo');
    t.is(await s.photoHash('carol'), undefined, 'no vCard');
  });

  test(title('private XML: one value per namespace, set several at once, an empty value removes the namespace'), async (t) => {
    const s = await open(t);
    t.is(await s.privateXml('alice', 'storage:bookmarks'), undefined);
    await s.setPrivateXml('alice', [{ ns: 'storage:bookmarks', xml: '<storage xmlns="storage:bookmarks"/>' }, { ns: 'a:prefs', xml: '<p xmlns="a:prefs">1</p><p xmlns="a:prefs">2</p>' }], 10);
    t.is(await s.privateXml('alice', 'a:prefs'), '<p xmlns="a:prefs">1</p><p xmlns="a:prefs">2</p>');
    t.is(await s.privateXml('bob', 'a:prefs'), undefined, "another account's is its own");
    await s.setPrivateXml('alice', [{ ns: 'a:prefs', xml: '<p xmlns="a:prefs">3</p>' }], 10);
    t.is(await s.privateXml('alice', 'a:prefs'), '<p xmlns="a:prefs">3</p>');
    t.deepEqual((await s.privateAll('alice')).map((e) => e.ns), ['a:prefs', 'storage:bookmarks'], 'sorted by namespace');
    await s.setPrivateXml('alice', [{ ns: 'storage:bookmarks', xml: '' }], 10);
    t.deepEqual(await s.privateAll('alice'), [{ ns: 'a:prefs', xml: '<p xmlns="a:prefs">3</p>' }]);
  });

  test(title('private XML: more namespaces than allowed changes nothing; replacing one at the limit is allowed'), async (t) => {
    const s = await open(t);
    await s.setPrivateXml('alice', [{ ns: 'n:1', xml: '<a xmlns="n:1"/>' }, { ns: 'n:2', xml: '<a xmlns="n:2"/>' }], 2);
    const err = await t.throwsAsync(s.setPrivateXml('alice', [{ ns: 'n:2', xml: '<b xmlns="n:2"/>' }, { ns: 'n:3', xml: '<a xmlns="n:3"/>' }], 2));
    t.is(err?.name, 'PrivateStorageFullError');
    t.true(err instanceof PrivateStorageFullError);
    t.is(await s.privateXml('alice', 'n:2'), '<a xmlns="n:2"/>', 'the whole set rolled back');
    t.is(await s.privateXml('alice', 'n:3'), undefined);
    await s.setPrivateXml('alice', [{ ns: 'n:2', xml: '<c xmlns="n:2"/>' }], 2);
    t.is(await s.privateXml('alice', 'n:2'), '<c xmlns="n:2"/>');
    // One removed and one added in a set: within the limit.
    await s.setPrivateXml('alice', [{ ns: 'n:1', xml: '' }, { ns: 'n:3', xml: '<a xmlns="n:3"/>' }], 2);
    t.deepEqual((await s.privateAll('alice')).map((e) => e.ns), ['n:2', 'n:3']);
  });

  test(title('a vCard swap writes only over the value it names, none for no vCard'), async (t) => {
    const s = await open(t);
    t.false(await s.swapVcard('alice', vcard('Other').xml, vcard('Alice')), 'no vCard is not the one named');
    t.is(await s.vcard('alice'), undefined);
    t.true(await s.swapVcard('alice', undefined, vcard('Alice')), 'none, as named');
    t.false(await s.swapVcard('alice', undefined, vcard('Again')), 'there is one now');
    t.deepEqual(await s.vcard('alice'), vcard('Alice'));
    const photo = { xml: '<vCard xmlns="vcard-temp"><FN>Alice</FN><PHOTO/></vCard>', photoHash: 'cd'.repeat(20) };
    t.true(await s.swapVcard('alice', vcard('Alice').xml, photo));
    t.deepEqual(await s.vcard('alice'), photo);
    // Another writer's change between the read and the swap: the swap changes nothing.
    await s.setVcard('alice', vcard('Changed meanwhile'));
    t.false(await s.swapVcard('alice', photo.xml, vcard('Stale')));
    t.deepEqual(await s.vcard('alice'), vcard('Changed meanwhile'));
    t.is(await s.photoHash('alice'), '');
    t.is(await s.vcard('bob'), undefined, "another account's untouched");
  });

  test(title('a private XML swap writes only over the value it names; an empty value removes; the namespace limit holds'), async (t) => {
    const s = await open(t);
    const ns = 'storage:bookmarks';
    const a = '<storage xmlns="storage:bookmarks"><conference jid="a@c"/></storage>';
    const b = '<storage xmlns="storage:bookmarks"><conference jid="b@c"/></storage>';
    t.false(await s.swapPrivateXml('alice', ns, a, b, 10), 'not set is not the value named');
    t.true(await s.swapPrivateXml('alice', ns, undefined, a, 10));
    t.false(await s.swapPrivateXml('alice', ns, undefined, b, 10), 'set now');
    await s.setPrivateXml('alice', [{ ns, xml: b }], 10);
    t.false(await s.swapPrivateXml('alice', ns, a, `${a}${b}`, 10), 'changed between the read and the swap');
    t.is(await s.privateXml('alice', ns), b);
    t.true(await s.swapPrivateXml('alice', ns, b, `${b}${a}`, 10));
    t.is(await s.privateXml('alice', ns), `${b}${a}`);
    t.true(await s.swapPrivateXml('alice', ns, `${b}${a}`, '', 10), 'emptied');
    t.is(await s.privateXml('alice', ns), undefined);
    t.is(await s.privateXml('bob', ns), undefined);
    await s.setPrivateXml('alice', [{ ns: 'n:1', xml: '<a xmlns="n:1"/>' }], 1);
    const err = await t.throwsAsync(s.swapPrivateXml('alice', ns, undefined, a, 1));
    t.is(err?.name, 'PrivateStorageFullError');
    t.is(await s.privateXml('alice', ns), undefined, 'nothing written');
  });

  test(title('removeAll takes the vCard and the private XML of that account only'), async (t) => {
    const s = await open(t);
    for (const u of ['alice', 'bob']) {
      await s.setVcard(u, vcard(u));
      await s.setPrivateXml(u, [{ ns: 'x:y', xml: `<z xmlns="x:y">${u}</z>` }], 10);
    }
    await s.removeAll('alice');
    t.is(await s.vcard('alice'), undefined);
    t.deepEqual(await s.privateAll('alice'), []);
    t.deepEqual(await s.vcard('bob'), vcard('bob'));
    t.is(await s.privateXml('bob', 'x:y'), '<z xmlns="x:y">bob</z>');
  });
}
