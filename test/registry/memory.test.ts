import { registryContract } from './contract.ts';
import { MemoryRegistry } from '../../src/registry/memory.ts';
import type { SessionRegistry } from '../../src/registry/registry.ts';

/** The memory registry as workers see it: the same calls, made asynchronous. */
function asRegistry(m: MemoryRegistry): SessionRegistry {
  return {
    bind: async (req) => m.bind(req),
    unbind: async (jid, sid) => void m.remove(jid, sid),
    setPresence: async (jid, sid, available, priority) => (m.setPresence(jid, sid, available, priority), true),
    noteDirected: async () => {},
    move: async (jid, sid, _node, worker) => m.move(jid, sid, worker) !== undefined,
    lookup: async (jid) => m.lookup(jid),
    resources: async (bare) => m.resources(bare),
  };
}

registryContract('memory', async () => ({ registry: asRegistry(new MemoryRegistry()), node: 'single' }));
