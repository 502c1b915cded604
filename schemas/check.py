#!/usr/bin/env python3
"""Checks schemas/ and fixtures/admin/ against each other.

    python3 schemas/check.py          # check (exit 1 on any failure)
    python3 schemas/check.py --write  # regenerate the standalone *.schema.json twins
                                      # from the components of openapi.yaml, then check

Needs only the standard library plus PyYAML (to read openapi.yaml). When they are
importable it also uses `jsonschema` (schemas are valid draft 2020-12; fixtures and
examples validate as expected) and `openapi-spec-validator` (openapi.yaml is valid
OpenAPI 3.1). Missing optional packages are reported as SKIP, not as failures.

openapi.yaml is the source of truth: each body schema is an inline component there
(so single-file consumers such as schemathesis work) and has a standalone twin file
here. The twins must say the same thing once every $ref is inlined.
"""
import base64
import copy
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT / "fixtures" / "admin"
ID_BASE = "https://pushrelay.example/schemas/"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# standalone file -> (component name, title)
TWINS = {
    "error.schema.json": ("Error", "pushrelay JSON error body"),
    "apns-credentials.schema.json": ("ApnsCredentials", "PUT /v1/apps/{app_id}/apns body"),
    "fcm-credentials.schema.json": ("FcmCredentials", "PUT /v1/apps/{app_id}/fcm body"),
    "service-account.schema.json": ("ServiceAccount", "Google service-account JSON (decoded serviceAccount)"),
    "user.schema.json": ("User", "PUT /v1/users/{userId} body"),
    "call-event.schema.json": ("CallEvent", "POST /v1/calls body"),
    "call-report.schema.json": ("CallReport", "POST /v1/calls and GET /v1/calls/{call_id} answer"),
    "device-list.schema.json": ("DeviceList", "GET /v1/users/{userId}/devices answer"),
    "webex-secret.schema.json": ("WebexSecret", "PUT /v1/apps/{app_id}/webex body"),
    "spark-register.schema.json": ("SparkRegister", "POST /register body (Spark/Webex)"),
    "acrobits-report.schema.json": ("AcrobitsReport", "POST /acrobits/token JSON body"),
    "sip-wake.schema.json": ("SipWake", "POST /sip/wake body"),
}
FILE_OF = {comp: f for f, (comp, _) in TWINS.items()}

# fixture -> (schema file, expected valid?, decoded serviceAccount expected valid? or None)
FIXTURE_EXPECT = {
    "apns-token-seed003.json": ("apns-credentials.schema.json", True, None),
    "apns-token-valid.json": ("apns-credentials.schema.json", True, None),
    "fcm-valid.json": ("fcm-credentials.schema.json", True, True),
    "apns-missing-keyid.json": ("apns-credentials.schema.json", False, None),
    "apns-keyfile-not-base64.json": ("apns-credentials.schema.json", False, None),
    "fcm-seed003.json": ("fcm-credentials.schema.json", True, True),
    "fcm-missing-token-uri.json": ("fcm-credentials.schema.json", True, False),
    "call-event.json": ("call-event.schema.json", True, None),
    "call-event-bad-ring.json": ("call-event.schema.json", False, None),
    "user.json": ("user.schema.json", True, None),
}

failures = []


def ok(msg):
    print(f"ok    {msg}")


def fail(msg):
    failures.append(msg)
    print(f"FAIL  {msg}")


def skip(msg):
    print(f"SKIP  {msg}")


def load_openapi():
    try:
        import yaml
    except ImportError:
        fail("PyYAML is not importable: cannot parse openapi.yaml (pip install pyyaml)")
        return None
    try:
        doc = yaml.safe_load((HERE / "openapi.yaml").read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001
        fail(f"openapi.yaml does not parse: {e}")
        return None
    ok("openapi.yaml parses as YAML")
    return doc


# ---------------------------------------------------------------- twins

def export_component(doc, name):
    """Build the standalone JSON Schema for component `name`."""
    comps = doc["components"]["schemas"]
    defs = {}

    def rewrite(node):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "$ref" and isinstance(v, str) and v.startswith("#/components/schemas/"):
                    target = v.rsplit("/", 1)[1]
                    if target in FILE_OF and target != name:
                        out[k] = FILE_OF[target]
                    else:
                        out[k] = f"#/$defs/{target}"
                        if target not in defs:
                            defs[target] = None
                            defs[target] = rewrite(copy.deepcopy(comps[target]))
                else:
                    out[k] = rewrite(v)
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    body = rewrite(copy.deepcopy(comps[name]))
    fname = FILE_OF[name]
    out = {"$schema": DIALECT, "$id": ID_BASE + fname, "title": TWINS[fname][1]}
    out.update(body)
    if defs:
        out["$defs"] = {k: defs[k] for k in sorted(defs)}
    return out


def inline(node, resolve, depth=0):
    """Replace every {"$ref": ...} by its (inlined) target; drop $schema/$id/$defs."""
    if depth > 50:
        raise RecursionError("$ref cycle")
    if isinstance(node, dict):
        if "$ref" in node:
            target = inline(resolve(node["$ref"]), resolve, depth + 1)
            rest = {k: v for k, v in node.items() if k != "$ref"}
            if rest:  # 2020-12 allows siblings of $ref
                return {"allOf": [target], **inline(rest, resolve, depth + 1)}
            return target
        return {k: inline(v, resolve, depth + 1) for k, v in node.items()
                if k not in ("$schema", "$id", "$defs")}
    if isinstance(node, list):
        return [inline(v, resolve, depth + 1) for v in node]
    return node


def openapi_resolver(doc):
    def resolve(ref):
        if not ref.startswith("#/components/schemas/"):
            raise ValueError(f"unexpected $ref in openapi.yaml: {ref}")
        return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolve


def file_resolver(files, current):
    def resolve(ref):
        if ref.startswith("#/$defs/"):
            return files[current]["$defs"][ref.rsplit("/", 1)[1]]
        fname, _, frag = ref.partition("#")
        fname = fname.removeprefix(ID_BASE)
        if fname not in files:
            raise ValueError(f"{current}: $ref to unknown file {ref}")
        if frag:
            return files[fname]["$defs"][frag.rsplit("/", 1)[1]]
        return strip_root_title(files[fname])  # the title is added by --write only
    return resolve


def nested_resolver(files, start):
    """Resolve relative to the file a ref was found in (refs can hop between files)."""
    def make(current):
        base = file_resolver(files, current)

        def resolve(ref):
            target = base(ref)
            fname = ref.partition("#")[0].removeprefix(ID_BASE) or current
            return inline(target, make(fname))
        return resolve
    return make(start)


def strip_root_title(s):
    s = dict(s)
    s.pop("title", None)
    return s


def check_twins(doc, write):
    files = {}
    for fname, (comp, _) in TWINS.items():
        path = HERE / fname
        if write:
            path.write_text(json.dumps(export_component(doc, comp), indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
        try:
            files[fname] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            fail(f"{fname} is missing")
        except json.JSONDecodeError as e:
            fail(f"{fname} does not parse: {e}")
    for fname, (comp, _) in TWINS.items():
        if fname not in files:
            continue
        f = files[fname]
        if f.get("$schema") != DIALECT:
            fail(f"{fname}: $schema is not draft 2020-12")
        if f.get("$id") != ID_BASE + fname:
            fail(f"{fname}: $id should be {ID_BASE + fname}")
        try:
            a = strip_root_title(inline(doc["components"]["schemas"][comp], openapi_resolver(doc)))
            b = strip_root_title(inline(f, nested_resolver(files, fname)))
        except Exception as e:  # noqa: BLE001
            fail(f"{fname}: cannot inline $refs: {e}")
            continue
        if a == b:
            ok(f"{fname} is in step with components/schemas/{comp}")
        else:
            fail(f"{fname} differs from components/schemas/{comp} (run check.py --write)")
    return files


# ---------------------------------------------------------------- jsonschema

def make_validator(files, fname):
    import jsonschema
    from jsonschema import Draft202012Validator
    try:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012
        registry = Registry().with_resources(
            (f["$id"], Resource.from_contents(f, default_specification=DRAFT202012)) for f in files.values())
        return Draft202012Validator(files[fname], registry=registry,
                                    format_checker=Draft202012Validator.FORMAT_CHECKER)
    except ImportError:  # old jsonschema without `referencing`
        store = {f["$id"]: f for f in files.values()}
        resolver = jsonschema.RefResolver.from_schema(files[fname], store=store)
        return Draft202012Validator(files[fname], resolver=resolver,
                                    format_checker=Draft202012Validator.FORMAT_CHECKER)


def check_with_jsonschema(doc, files, fixtures):
    try:
        import jsonschema  # noqa: F401
        from jsonschema import Draft202012Validator
    except ImportError:
        skip("jsonschema not importable: schema/fixture validation skipped (pip install jsonschema)")
        return
    for fname, f in files.items():
        try:
            Draft202012Validator.check_schema(f)
            ok(f"{fname} is a valid draft 2020-12 schema")
        except Exception as e:  # noqa: BLE001
            fail(f"{fname} is not a valid schema: {getattr(e, 'message', e)}")

    def verdict(label, validator, instance, expect_valid):
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            from jsonschema.exceptions import best_match
            errors = [best_match(errors)]
        if expect_valid and not errors:
            ok(f"{label} validates")
        elif not expect_valid and errors:
            ok(f"{label} is rejected as expected ({errors[0].message[:90]})")
        elif expect_valid:
            fail(f"{label} should validate: {errors[0].message[:200]} at {list(errors[0].path)}")
        else:
            fail(f"{label} should be rejected but validates")

    for fx, (sfile, expect, sa_expect) in FIXTURE_EXPECT.items():
        if fx not in fixtures or sfile not in files:
            continue
        verdict(f"fixtures/admin/{fx} vs {sfile}", make_validator(files, sfile), fixtures[fx], expect)
        if sa_expect is not None and "service-account.schema.json" in files:
            try:
                sa = json.loads(base64.b64decode(fixtures[fx]["serviceAccount"], validate=False))
            except Exception as e:  # noqa: BLE001
                fail(f"fixtures/admin/{fx}: serviceAccount is not base64 of JSON: {e}")
                continue
            verdict(f"fixtures/admin/{fx} decoded serviceAccount vs service-account.schema.json",
                    make_validator(files, "service-account.schema.json"), sa, sa_expect)

    # every JSON example in openapi.yaml validates against its media type's schema
    resolve = openapi_resolver(doc)
    n = 0
    for media, where in iter_media(doc):
        if "example" in media and "schema" in media and where[1].startswith("application/json"):
            schema = inline(media["schema"], resolve)
            v = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
            errs = list(v.iter_errors(media["example"]))
            n += 1
            if errs:
                fail(f"openapi example at {where[0]} ({where[1]}) does not match its schema: {errs[0].message}")
    ok(f"{n} JSON examples in openapi.yaml match their schemas")

    # XML examples are well-formed; the <token> example satisfies UdsToken
    token_schema = inline(doc["components"]["schemas"]["UdsToken"], resolve)
    for media, where in iter_media(doc):
        if "xml" in where[1] and isinstance(media.get("example"), str):
            try:
                root = ET.fromstring(media["example"].encode("utf-8"))
            except ET.ParseError as e:
                fail(f"XML example at {where[0]} is not well-formed: {e}")
                continue
            xml_name = inline(media["schema"], resolve).get("xml", {}).get("name")
            if root.tag != xml_name:
                fail(f"XML example at {where[0]}: root <{root.tag}>, schema says <{xml_name}>")
            if root.tag == "token":
                as_obj = {c.tag: (c.text or "").strip() for c in root}
                errs = list(Draft202012Validator(token_schema).iter_errors(as_obj))
                if errs:
                    fail(f"<token> example does not satisfy UdsToken: {errs[0].message}")
    ok("XML examples in openapi.yaml are well-formed and match their root element")


def iter_media(doc):
    def walk(node, path):
        if isinstance(node, dict):
            if "content" in node and isinstance(node["content"], dict):
                for mt, media in node["content"].items():
                    if isinstance(media, dict):
                        yield media, (path, mt)
            for k, v in node.items():
                yield from walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}/{i}")
    yield from walk(doc, "")


def check_openapi_validator(doc):
    try:
        from openapi_spec_validator import validate
    except ImportError:
        skip("openapi-spec-validator not importable: OpenAPI 3.1 validation skipped")
        return
    try:
        try:
            from openapi_spec_validator import OpenAPIV31SpecValidator
            validate(doc, cls=OpenAPIV31SpecValidator)
        except ImportError:
            validate(doc)
        ok("openapi.yaml is valid OpenAPI 3.1 (openapi-spec-validator)")
    except Exception as e:  # noqa: BLE001
        fail(f"openapi.yaml is not valid OpenAPI: {str(e).splitlines()[0]}")


def check_contract(doc):
    """The routes and security of interface.md §2, §4, §7, §8 and §9, exactly."""
    want = {
        "/healthz": {"get"}, "/readyz": {"get"}, "/metrics": {"get"},
        "/v1/apps/{app_id}": {"get"},
        "/v1/apps/{app_id}/apns": {"put", "delete"},
        "/v1/apps/{app_id}/fcm": {"put", "delete"},
        "/v1/users/{userId}": {"put", "delete"},
        "/v1/users/{userId}/devices": {"get"},
        "/cucm-uds/user/{userId}/device/{devicePkid}/devicetoken": {"put", "delete"},
        "/v1/calls": {"post"},
        "/v1/calls/{call_id}": {"get"},
        "/v1/calls/{call_id}/cancel": {"post"},
        "/v1/apps/{app_id}/webex": {"put"},
        "/register": {"get", "post"},
        "/v1/apps/{app_id}/test-push": {"post"},
        "/v1/apps/{app_id}/callback": {"put", "delete"},
        "/console": {"get"},
        "/console/login": {"get", "post"},
        "/console/logout": {"post"},
        "/register/{device_token}": {"delete"},
        "/webhook": {"post"},
        "/acrobits/token": {"get", "post"},
        "/sip/register": {"post"},
        "/sip/wake": {"post"},
        "/sip/cancel": {"post"},
        "/v1/api-keys": {"post"},
        "/v1/api-keys/{id}": {"delete"},
        "/v1/devices/stale": {"get"},
        "/v1/tenants": {"get"},
        "/v1/tenants/{tenant}": {"get", "put", "delete"},
        # interface.md §9: more providers, and pushrelay's own registration.
        "/v1/apps/{app_id}/hms": {"put", "delete"},
        "/v1/apps/{app_id}/webpush": {"put", "delete"},
        "/v1/users/{userId}/devices/{deviceId}": {"put", "delete"},
    }
    # interface.md §8: every phone-facing route again under /t/{tenant}.
    for p in PHONE_FACING:
        want[TENANT_PREFIX + p] = want[p]
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    have = {p: {m for m in item if m in methods} for p, item in doc.get("paths", {}).items()}
    for p in sorted(set(want) | set(have)):
        if want.get(p) != have.get(p):
            fail(f"path {p}: methods {sorted(have.get(p, []))}, contract says {sorted(want.get(p, []))}")
    for p, item in doc.get("paths", {}).items():
        twin = p[len(TENANT_PREFIX):] if p.startswith(TENANT_PREFIX) else None
        if twin is not None:
            check_tenant_twin(doc, p, twin, methods)
            p = twin
        for m in methods & set(item):
            op = item[m]
            sec = op.get("security")
            # The console: a bearer, or the session cookie its sign-in form gives.
            expect = [] if p in ("/healthz", "/readyz", "/metrics", "/webhook", "/console/login", "/console/logout") else \
                [{"bearerAuth": []}, {}] if p == "/console" else \
                [{"basicAuth": []}] if p.startswith("/cucm-uds/") else \
                [{"basicAuth": []}, {"bearerAuth": []}] if p == "/acrobits/token" else [{"bearerAuth": []}]
            if sec != expect:
                fail(f"{m.upper()} {p}: security {sec}, expected {expect}")
            if p.startswith("/v1/"):
                for code in ("401", "403", "500"):
                    if code not in op.get("responses", {}):
                        fail(f"{m.upper()} {p}: no {code} response")
    if not [f for f in failures if f.startswith(("path ", "GET ", "PUT ", "POST ", "DELETE "))]:
        ok("paths, methods and security match interface.md §2, §4, §7, §8 and §9")


TENANT_PREFIX = "/t/{tenant}"
PHONE_FACING = ["/cucm-uds/user/{userId}/device/{devicePkid}/devicetoken", "/register", "/register/{device_token}",
                "/webhook", "/acrobits/token"]


def check_tenant_twin(doc, path, twin, methods):
    """A /t/{tenant} route is its unprefixed twin plus the tenant parameter, and
    operation ids suffixed `InTenant`: the two cannot drift apart."""
    a, b = doc["paths"][path], doc["paths"].get(twin)
    if b is None:
        fail(f"{path}: no unprefixed twin {twin}")
        return
    want_params = [{"$ref": "#/components/parameters/Tenant"}] + b.get("parameters", [])
    if a.get("parameters") != want_params:
        fail(f"{path}: parameters are not the tenant parameter plus those of {twin}")
    for m in methods & (set(a) | set(b)):
        if m not in a or m not in b:
            fail(f"{path}: method {m} differs from {twin}")
            continue
        op, ref = dict(a[m]), dict(b[m])
        if op.pop("operationId", None) != ref.get("operationId", "") + "InTenant":
            fail(f"{m.upper()} {path}: operationId is not {twin}'s plus InTenant")
        ref.pop("operationId", None)
        if op != ref:
            fail(f"{m.upper()} {path} differs from {m.upper()} {twin} (regenerate the /t/ twins)")


def main():
    write = "--write" in sys.argv[1:]
    doc = load_openapi()
    fixtures = {}
    for p in sorted(FIXTURES.glob("*.json")):
        try:
            fixtures[p.name] = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            fail(f"fixtures/admin/{p.name} does not parse: {e}")
    if fixtures:
        ok(f"{len(fixtures)} fixtures/admin/*.json parse")
    for fx in FIXTURE_EXPECT:
        if fx not in fixtures and not any(f.endswith(fx) for f in failures):
            fail(f"fixtures/admin/{fx} is missing")
    if doc is not None:
        check_contract(doc)
        files = check_twins(doc, write)
        check_with_jsonschema(doc, files, fixtures)
        check_openapi_validator(doc)
    print()
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
