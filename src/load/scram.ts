// SCRAM-SHA-1 (RFC 5802), client side, without channel binding ("n,,").
// The costly part, PBKDF2, depends only on (password, salt, iterations):
// its result is cached, since a load run logs the same users in again and
// again (and all of them may share one password).
import { createHash, createHmac, pbkdf2, randomBytes } from 'node:crypto';
import saslprep from 'saslprep';

interface Keys {
  clientKey: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

const cache = new Map<string, Promise<Keys>>();
const CACHE_MAX = 200_000;

function keys(password: string, salt: string, iterations: number): Promise<Keys> {
  const id = `${iterations}\0${salt}\0${password}`;
  let p = cache.get(id);
  if (!p) {
    p = new Promise<Keys>((resolve, reject) => {
      pbkdf2(saslprep(password), Buffer.from(salt, 'base64'), iterations, 20, 'sha1', (err, salted) => {
        if (err) return reject(err);
        const clientKey = createHmac('sha1', salted).update('Client Key').digest();
        resolve({
          clientKey,
          storedKey: createHash('sha1').update(clientKey).digest(),
          serverKey: createHmac('sha1', salted).update('Server Key').digest(),
        });
      });
    });
    if (cache.size >= CACHE_MAX) cache.clear();
    cache.set(id, p);
    p.catch(() => cache.delete(id));
  }
  return p;
}

function saslname(s: string): string {
  return s.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

export class ScramClient {
  private readonly password: string;
  private readonly clientFirstBare: string;
  private readonly cnonce: string;
  private expectedSignature = '';

  /** `cnonce` is for tests (RFC 5802's example); a random one otherwise. */
  constructor(username: string, password: string, cnonce = randomBytes(18).toString('base64')) {
    this.password = password;
    this.cnonce = cnonce;
    this.clientFirstBare = `n=${saslname(username)},r=${this.cnonce}`;
  }

  /** The initial response, base64. */
  first(): string {
    return Buffer.from(`n,,${this.clientFirstBare}`).toString('base64');
  }

  /** The answer to the server's first message (base64 in, base64 out). */
  async final(challengeB64: string): Promise<string> {
    const serverFirst = Buffer.from(challengeB64, 'base64').toString();
    let nonce = '';
    let salt = '';
    let iterations = 0;
    for (const part of serverFirst.split(',')) {
      const v = part.slice(2);
      if (part.startsWith('r=')) nonce = v;
      else if (part.startsWith('s=')) salt = v;
      else if (part.startsWith('i=')) iterations = Number(v);
    }
    if (!nonce.startsWith(this.cnonce) || !salt || !(iterations > 0)) throw new Error('malformed server-first-message');
    const k = await keys(this.password, salt, iterations);
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const signature = createHmac('sha1', k.storedKey).update(authMessage).digest();
    const proof = Buffer.allocUnsafe(20);
    for (let i = 0; i < 20; i++) proof[i] = k.clientKey[i] ^ signature[i];
    this.expectedSignature = createHmac('sha1', k.serverKey).update(authMessage).digest('base64');
    return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`).toString('base64');
  }

  /** Whether the server's final message (in <success/>, base64) proves it knows the password. */
  verify(successB64: string): boolean {
    const m = /(?:^|,)v=([^,]+)/.exec(Buffer.from(successB64, 'base64').toString());
    return m !== null && m[1] === this.expectedSignature;
  }
}
