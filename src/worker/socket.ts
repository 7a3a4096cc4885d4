// The connection socket as the worker receives it. Node's worker messaging
// rebuilds a transferred net.Socket as an object whose properties V8 keeps in
// dictionary mode: 1.6 KB per connection in Node 26, where a Socket built
// over a handle is an ordinary object of about 0.4 KB. With thousands of idle
// connections per worker that difference is worth one allocation: the worker
// builds its own Socket over the transferred handle and drops the shell.
import net from 'node:net';

/** The internal field that holds a Socket's libuv handle (stable across Node versions, if undocumented). */
type WithHandle = { _handle: object | null };

/**
 * A fresh Socket over the handle of a transferred one, in the same state:
 * paused, nothing read yet. The shell is emptied, not destroyed (destroying
 * it would close the handle), so nothing done to it reaches the connection.
 * A transferred socket always arrives with its handle (Node refuses to
 * deserialize one without).
 */
export function adoptSocket(transferred: net.Socket): net.Socket {
  const shell = transferred as unknown as WithHandle;
  const handle = shell._handle;
  shell._handle = null;
  // The options net.Server gives the sockets it accepts with pauseOnConnect.
  return new net.Socket({ handle, allowHalfOpen: transferred.allowHalfOpen, pauseOnCreate: true, readable: true, writable: true } as net.SocketConstructorOpts);
}
