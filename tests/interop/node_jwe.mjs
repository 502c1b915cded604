// Foreign JWE implementation for tests/jwe_interop.rs: panva/jose (npm).
// Usage: node node_jwe.mjs encrypt <key_b64> < plaintext  > compact
//        node node_jwe.mjs decrypt <key_b64> < compact    > plaintext
import { CompactEncrypt, compactDecrypt } from 'jose';

const [mode, keyB64] = process.argv.slice(2);
if (!['encrypt', 'decrypt'].includes(mode) || !keyB64) {
  process.stderr.write('usage: node_jwe.mjs encrypt|decrypt <key_b64>\n');
  process.exit(2);
}
const key = new Uint8Array(Buffer.from(keyB64, 'base64'));
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = Buffer.concat(chunks);

try {
  if (mode === 'encrypt') {
    const jwe = await new CompactEncrypt(new Uint8Array(input))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' })
      .encrypt(key);
    process.stdout.write(jwe);
  } else {
    const { plaintext } = await compactDecrypt(input.toString('utf8').trim(), key, {
      keyManagementAlgorithms: ['dir'],
      contentEncryptionAlgorithms: ['A128GCM', 'A192GCM', 'A256GCM'],
    });
    process.stdout.write(Buffer.from(plaintext));
  }
} catch (e) {
  process.stderr.write(`node jose ${mode} failed: ${e.code ?? ''} ${e.message}\n`);
  process.exit(1);
}
