"""Foreign JWE implementation for tests/jwe_interop.rs: jwcrypto (PyPI).

Usage: py_jwe.py encrypt <key_b64> < plaintext  > compact
       py_jwe.py decrypt <key_b64> < compact    > plaintext
"""
import base64
import json
import sys

from jwcrypto import jwe, jwk


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("encrypt", "decrypt"):
        print("usage: py_jwe.py encrypt|decrypt <key_b64>", file=sys.stderr)
        return 2
    mode, key_b64 = sys.argv[1], sys.argv[2]
    raw = base64.b64decode(key_b64, validate=True)
    key = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(raw).rstrip(b"=").decode())
    data = sys.stdin.buffer.read()
    try:
        if mode == "encrypt":
            token = jwe.JWE(data, protected=json.dumps({"alg": "dir", "enc": "A256GCM"}))
            token.add_recipient(key)
            sys.stdout.write(token.serialize(compact=True))
        else:
            token = jwe.JWE()
            token.allowed_algs = ["dir", "A128GCM", "A192GCM", "A256GCM"]
            token.deserialize(data.decode("ascii").strip(), key=key)
            sys.stdout.buffer.write(token.payload)
    except Exception as e:  # noqa: BLE001 - report any refusal as a failure
        print(f"jwcrypto {mode} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
