// Client-initiated TLS renegotiation (TLS 1.2 and older; TLS 1.3 has none)
// costs the server a full handshake each time and no client needs it: it is
// refused, as Prosody does (OpenSSL's no_renegotiation), and the connection
// ends. Node's disableRenegotiation() detects it as the client's new
// handshake starts, but a TLSSocket made outside a tls.Server (ours, over
// sockets handed from the acceptor or upgraded by STARTTLS) reports it only
// on the internal '_tlsError' event: an 'error' needs the "control" that a
// tls.Server releases. So that event is heard, and, should a later Node
// report it elsewhere, a second 'secure' (a renegotiation that completed)
// ends the connection all the same.
import type { TLSSocket } from 'node:tls';

/** Refuses renegotiation on the server side of `t`: `refused` is called (once) and should end the connection. */
export function refuseRenegotiation(t: TLSSocket, refused: (err: Error) => void): void {
  t.disableRenegotiation();
  let done = false;
  const once = (err: Error) => {
    if (done) return;
    done = true;
    refused(err);
  };
  // Every TLS error passes there (a write cancelled at the close too): only a refused renegotiation is one of ours.
  t.on('_tlsError', (err: NodeJS.ErrnoException) => {
    if (err.code === 'ERR_TLS_RENEGOTIATION_DISABLED') once(err);
  });
  let handshakes = 0;
  t.on('secure', () => {
    if (++handshakes > 1) once(new Error('TLS renegotiation is not allowed'));
  });
}
