// One HTTP(S) exchange in tests: the request as each test builds it (its
// method, headers, agent, CA...), its whole answer read back as text,
// bounded in time.
import type http from 'node:http';
import { within } from './protocol.ts';

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * Ends `req` (with `body`, if any) and reads its answer; rejects if none
 * comes within `ms`. `afterClose`: a refusal may come, and the connection
 * close, before the body is all sent (an error then is not the answer's).
 */
export function reply(req: http.ClientRequest, what: string, opts: { body?: string | Buffer; ms?: number; afterClose?: boolean } = {}): Promise<Reply> {
  return within(
    new Promise<Reply>((resolve, reject) => {
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
        res.on('error', reject);
      });
      req.on('error', (err) => (opts.afterClose && req.destroyed ? undefined : reject(err)));
      req.end(opts.body);
    }),
    opts.ms ?? 10_000,
    what,
  );
}
