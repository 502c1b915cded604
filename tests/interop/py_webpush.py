"""Web Push interop for tests/webpush_interop.rs: Mozilla's reference
implementations decrypt and verify what pushrelay sent.

  py_webpush.py decrypt <receiver private key d, base64url> <auth, base64url>
      stdin: the aes128gcm body as sent; stdout: the plaintext.
  py_webpush.py vapid <Authorization header value>
      stdout: the JWT claims (JSON) once py_vapid has verified the ES256
      signature with the header's own k=; exit 1 otherwise.
"""
import base64
import json
import sys

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02


def b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def main():
    mode = sys.argv[1]
    if mode == "decrypt":
        d = int.from_bytes(b64(sys.argv[2]), "big")
        key = ec.derive_private_key(d, ec.SECP256R1())
        body = sys.stdin.buffer.read()
        plain = http_ece.decrypt(body, private_key=key, auth_secret=b64(sys.argv[3]), version="aes128gcm")
        sys.stdout.buffer.write(plain)
    elif mode == "vapid":
        header = sys.argv[2]
        if not Vapid02.verify(header):
            print("py_vapid: signature does not verify", file=sys.stderr)
            sys.exit(1)
        token = header.split("t=", 1)[1].split(",", 1)[0]
        print(json.dumps(json.loads(b64(token.split(".")[1]))))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure is a refusal
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
