// The connection socket as the worker receives it. Node's worker messaging
// rebuilds a transferred net.Socket as an object whose properties V8 keeps in
// dictionary mode: 1.6 KB per connection in Node 26, where a Socket built
// over a handle is an ordinary object of about 0.4 KB. With thousands of idle
// connections per worker that difference is worth one allocation: the worker
// builds its own Socket over the transferred handle and drops the shell.
import net from 'node:net';

/** The internal field that holds a Socket's libuv handle (stable across Node versions, if undocumented). */
type WithHandle = { _handle: object | null };

/** The client a load balancer named in the connection's PROXY header (acceptor/proxy.ts). */
export interface Peer {
  address: string;
  port: number;
}

/**
 * Makes the connection's far end `peer` for every Socket over this handle:
 * remoteAddress and remotePort read it through the handle's getpeername(),
 * also a TLS socket's (Node's TLS handle asks the TCP handle under it). So
 * every limit, log line and HTTP header check sees the client, not the
 * load balancer, without each having to be told.
 */
function asPeer(handle: object, peer: Peer): void {
  const family = net.isIPv6(peer.address) ? 'IPv6' : 'IPv4';
  (handle as { getpeername: (out: Record<string, unknown>) => number }).getpeername = (out) => {
    out.address = peer.address;
    out.family = family;
    out.port = peer.port;
    return 0;
  };
}

/**
 * A fresh Socket over the handle of a transferred one, in the same state:
 * paused, nothing read yet. The shell is emptied, not destroyed (destroying
 * it would close the handle), so nothing done to it reaches the connection.
 * A transferred socket always arrives with its handle (Node refuses to
 * deserialize one without).
 */
export function adoptSocket(transferred: net.Socket, peer?: Peer): net.Socket {
  const shell = transferred as unknown as WithHandle;
  const handle = shell._handle;
  shell._handle = null;
  if (peer && handle) asPeer(handle, peer);
  // The options net.Server gives the sockets it accepts with pauseOnConnect.
  return new net.Socket({ handle, allowHalfOpen: transferred.allowHalfOpen, pauseOnCreate: true, readable: true, writable: true } as net.SocketConstructorOpts);
}
