"""Start Sygnal (element-hq/sygnal, unchanged) against a mock APNs.

Sygnal has no setting for its APNs host: aioapns connects to
api.push.apple.com:443. As Sygnal's own tests do, this launcher points
aioapns' protocol classes at the mock (host and port) before Sygnal starts;
the mock's CA comes in through SSL_CERT_FILE, which Python's default SSL
context reads. Usage (pushrelay-bench runs it):

    SSL_CERT_FILE=mock-ca.pem SYGNAL_CONF=sygnal.yaml python sygnal_launcher.py HOST PORT
"""
import sys

import aioapns.connection as connection

host, port = sys.argv[1], int(sys.argv[2])
for name in dir(connection):
    cls = getattr(connection, name)
    if isinstance(cls, type):
        if hasattr(cls, "APNS_SERVER"):
            cls.APNS_SERVER = host
        if hasattr(cls, "APNS_PORT"):
            cls.APNS_PORT = port

from sygnal.sygnal import main  # noqa: E402  (after the patch)

main()
