"""schemathesis hooks: a serializer for `message/sip` bodies (a raw SIP
message is text), so POST /sip/register is fuzzed too."""
import schemathesis


@schemathesis.serializer("message/sip")
def sip_serializer(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")
