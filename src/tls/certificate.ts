// The server's TLS identity: the configured PEM files, or a self-signed
// certificate for the served domain generated once with the openssl CLI and
// kept in the data directory so that clients can pin it across restarts.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/index.ts';
import { log } from '../log.ts';
import { makePrivateDir, makePrivateFile } from '../storage/files.ts';

export interface TlsIdentity {
  cert: string;
  key: string;
}

export function loadTlsIdentity(config: Config): TlsIdentity {
  if (config.tlsCert) return { cert: readFileSync(config.tlsCert, 'utf8'), key: readFileSync(config.tlsKey, 'utf8') };
  const dir = join(config.dataDir, 'tls');
  const certPath = join(dir, `${config.domain}.crt`);
  const keyPath = join(dir, `${config.domain}.key`);
  if (!existsSync(certPath) || !existsSync(keyPath)) {
    makePrivateDir(dir);
    // openssl writes into files that exist with their mode unchanged: both
    // are the owner's only from the first byte (the certificate too, as
    // everything in the data directory).
    makePrivateFile(certPath);
    makePrivateFile(keyPath);
    try {
      execFileSync('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-days', '3650', '-subj', `/CN=${config.domain}`,
        '-addext', `subjectAltName=DNS:${config.domain},DNS:*.${config.domain}`,
        '-keyout', keyPath, '-out', certPath,
      ], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      // Empty files would pass for a certificate at the next start.
      rmSync(certPath, { force: true });
      rmSync(keyPath, { force: true });
      throw err;
    }
    log.info('generated a self-signed certificate', { domain: config.domain, path: certPath });
  }
  return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
}
