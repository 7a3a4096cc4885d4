// The runtime's floor for memory per idle TLS connection: what a Node.js
// server that does nothing but accept TLS connections and hold them keeps for
// each (socket, TLS state, the JavaScript objects of both), without XMPP.
// The memory counterpart of bench/relay.ts: no XMPP server on this runtime
// can hold an idle TLS connection for less.
//
//   node bench/tls-floor.ts [--connections 2000] [--groups X25519] [--max-tls 1.2] [--plain]
//
// Starts the server as a child process pinned to core 0 (when taskset exists;
// the clients on core 1) that runs a full garbage collection every second,
// opens the connections (TLS handshake, 4 bytes of data each), waits 5 s,
// and prints the growth of the server's RSS per connection. --groups and --max-tls restrict what the server negotiates,
// --plain holds plain TCP connections instead.
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const { values: v } = parseArgs({
  options: {
    connections: { type: 'string', default: '2000' },
    groups: { type: 'string' },
    'max-tls': { type: 'string' },
    plain: { type: 'boolean', default: false },
    serve: { type: 'string' }, // internal: run as the server, with this key/cert directory
  },
});

const rssKiB = (pid: number) => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

if (v.serve !== undefined) {
  const onConn = (c: net.Socket) => {
    c.on('data', () => {});
    c.on('error', () => {});
  };
  const server = v.plain
    ? net.createServer(onConn)
    : tls.createServer(
        {
          key: readFileSync(join(v.serve, 'key.pem')),
          cert: readFileSync(join(v.serve, 'cert.pem')),
          ...(v.groups ? { ecdhCurve: v.groups } : {}),
          ...(v['max-tls'] ? { maxVersion: `TLSv${v['max-tls']}` as tls.SecureVersion } : {}),
        },
        onConn,
      );
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as net.AddressInfo).port}\n`));
  // Collect every second (the process runs with --expose-gc): the figure is
  // what live connections hold, not the garbage of their handshakes.
  setInterval(() => (globalThis as { gc?: () => void }).gc?.(), 1000);
} else {
  const n = Number(v.connections);
  const dir = mkdtempSync(join(tmpdir(), 'tls-floor-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
  let pinned = true;
  try {
    execFileSync('taskset', ['-cp', '1', String(process.pid)], { stdio: 'ignore' });
  } catch {
    pinned = false;
  }
  const args = ['--expose-gc', import.meta.filename, '--serve', dir, ...(v.plain ? ['--plain'] : []), ...(v.groups ? ['--groups', v.groups] : []), ...(v['max-tls'] ? ['--max-tls', v['max-tls']] : [])];
  const child = pinned ? spawn('taskset', ['-c', '0', process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] }) : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const [first] = (await once(child.stdout!, 'data')) as [Buffer];
  const port = Number(first.toString().trim());
  const pid = child.pid!; // taskset execs the command in its own process
  const before = rssKiB(pid);
  const sockets: net.Socket[] = [];
  let started = 0;
  let open = 0;
  await new Promise<void>((resolve, reject) => {
    const next = () => {
      while (started < n && started - open < 200) {
        started++;
        const done = () => {
          s.write('<x/>');
          if (++open === n) resolve();
          else next();
        };
        const s = v.plain ? net.connect(port, '127.0.0.1', done) : tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }, done);
        s.on('error', reject);
        sockets.push(s);
      }
    };
    next();
  });
  await new Promise((r) => setTimeout(r, 5000));
  const after = rssKiB(pid);
  const what = v.plain ? 'plain TCP' : `TLS${v['max-tls'] ? ` ≤ ${v['max-tls']}` : ''}${v.groups ? `, groups ${v.groups}` : ''}`;
  console.log(`${what}: ${n} idle connections, server RSS ${(before / 1024).toFixed(1)} → ${(after / 1024).toFixed(1)} MiB: ${((after - before) / n).toFixed(1)} KiB per connection`);
  for (const s of sockets) s.destroy();
  child.kill();
  rmSync(dir, { recursive: true, force: true });
}
