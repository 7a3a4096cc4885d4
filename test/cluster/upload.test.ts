// HTTP upload (XEP-0363) in a cluster: slots in PostgreSQL, files in one
// directory the nodes share (as the compose file's shared volume), so that
// a slot asked for on one node is put through another and got from either,
// once only; a node that does not share the directory answers 404 for a
// file the others have. Real processes, real HTTPS with the cluster's
// certificate.
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCluster, type TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { online, stanzaError, uid } from '../helpers/protocol.ts';
import { trustServer } from '../helpers/xmpp-client.ts';

const NS_UPLOAD = 'urn:xmpp:http:upload:0';
let cluster: TestCluster;
let shared: string;
let apart: string;

test.before(async () => {
  shared = mkdtempSync(join(tmpdir(), 'xmpp-uploads-'));
  apart = mkdtempSync(join(tmpdir(), 'xmpp-uploads-apart-'));
  cluster = await startCluster(['u1', 'u2'], { XMPP_HTTPS_PORT: '0', XMPP_UPLOAD_DIR: shared, XMPP_UPLOAD_QUOTA_BYTES: '1000' });
  const accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  try {
    await accounts.create('alice', 'alice-pw');
    await accounts.create('zoe', 'zoe-pw');
  } finally {
    await accounts.close();
  }
  // fetch verifies the nodes' certificate (the cluster's, for localhost).
  trustServer({ c2sPort: 0, tlsPort: 0, certFile: cluster.certFile });
});
test.after.always(async () => {
  await cluster?.stop();
  rmSync(shared, { recursive: true, force: true });
  rmSync(apart, { recursive: true, force: true });
});

test('a slot asked for on one node is put through the other, got from both, once; the quota is the cluster\'s; a node without the shared directory answers 404', async (t) => {
  const [u1, u2] = cluster.nodes;
  const { c } = await online(u1.c2sPort, 'alice', 'alice-pw', 'phone');
  t.teardown(() => c.destroy());
  const ask = async (size: number) => {
    const id = uid('slot');
    return c.request(`<iq type='get' id='${id}' to='upload.localhost'><request xmlns='${NS_UPLOAD}' filename='note.txt' size='${size}' content-type='text/plain'/></iq>`, id);
  };
  const reply = await ask(600);
  const url = new URL(reply.getChild('slot', NS_UPLOAD)!.getChild('put')!.attrs.url);
  t.is(url.port, String(u1.httpsPort), 'the URL of the node that was asked');
  const on = (port: number | undefined) => `https://localhost:${port}${url.pathname}`;
  // The balancer may send the PUT anywhere.
  t.is((await fetch(on(u2.httpsPort), { method: 'PUT', body: 'x'.repeat(600), headers: { 'Content-Type': 'text/plain' } })).status, 201);
  t.is(await (await fetch(on(u1.httpsPort))).text(), 'x'.repeat(600));
  t.is(await (await fetch(on(u2.httpsPort))).text(), 'x'.repeat(600));
  t.is((await fetch(on(u1.httpsPort), { method: 'PUT', body: 'y'.repeat(600), headers: { 'Content-Type': 'text/plain' } })).status, 409, 'once, whichever node is asked');
  t.is(readFileSync(join(shared, url.pathname.split('/')[2]), 'utf8'), 'x'.repeat(600), 'in the shared directory');
  // The quota counts what was put through the other node.
  t.is(stanzaError(await ask(500)).condition, 'resource-constraint');
  // A node that does not see the shared directory has nothing to serve.
  const u3 = await cluster.add('u3', { XMPP_UPLOAD_DIR: apart });
  t.is((await fetch(on(u3.httpsPort))).status, 404);
  await u3.waitForLog(/recorded but not on this node's disk/);
});

test('an account removed in band on one node takes the file it put through the other along: gone from the shared directory, 404 on both', async (t) => {
  const [u1, u2] = cluster.nodes;
  const { c } = await online(u1.c2sPort, 'zoe', 'zoe-pw', 'phone');
  t.teardown(() => c.destroy());
  const id = uid('slot');
  const reply = await c.request(`<iq type='get' id='${id}' to='upload.localhost'><request xmlns='${NS_UPLOAD}' filename='bye.txt' size='3' content-type='text/plain'/></iq>`, id);
  const path = new URL(reply.getChild('slot', NS_UPLOAD)!.getChild('put')!.attrs.url).pathname;
  t.is((await fetch(`https://localhost:${u2.httpsPort}${path}`, { method: 'PUT', body: 'bye', headers: { 'Content-Type': 'text/plain' } })).status, 201);
  const file = join(shared, path.split('/')[2]);
  t.true(existsSync(file));
  const rid = uid('remove');
  t.is((await c.request(`<iq type='set' id='${rid}'><query xmlns='jabber:iq:register'><remove/></query></iq>`, rid)).attrs.type, 'result');
  t.false(existsSync(file), 'removed from the shared directory');
  for (const node of [u1, u2]) t.is((await fetch(`https://localhost:${node.httpsPort}${path}`)).status, 404, node.name);
});
