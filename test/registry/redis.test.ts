import test from 'ava';
import { registryContract } from './contract.ts';
import { RedisServer } from '../helpers/redis.ts';
import { RedisRegistry } from '../../src/registry/redis.ts';
import { Membership } from '../../src/cluster/membership.ts';
import { connectRedis, ready } from '../../src/cluster/redis.ts';
import type { Redis } from 'ioredis';

let server: RedisServer;
const clients: Redis[] = [];
const fixture: { a?: RedisRegistry; b?: RedisRegistry } = {};

async function member(node: string): Promise<RedisRegistry> {
  const m = connectRedis(server.url, `${node}:m`);
  const c = connectRedis(server.url, `${node}:c`);
  clients.push(m, c);
  await Promise.all([ready(m), ready(c)]);
  const membership = new Membership(m, node, 60_000);
  await membership.join();
  return new RedisRegistry(c, node, () => membership.epoch);
}

test.before(async () => {
  server = await RedisServer.start();
  fixture.a = await member('ra');
  fixture.b = await member('rb');
});
test.after.always(async () => {
  for (const c of clients) c.disconnect();
  await server?.destroy();
});

registryContract('redis', async () => ({ registry: fixture.a!, node: 'ra', other: fixture.b!, otherNode: 'rb' }));
