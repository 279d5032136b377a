"""Validate what the black-box tests send and get against the API's schemas.

The map route+method -> request/reply schema is the daemon's own OpenAPI
document (GET /api/v1/openapi.json), built from src/schema/NAME.json and the
route table, so the tests check the same map the documentation shows.

check_exchange() is called by khlib.Api.request for every request:
- a JSON reply with a 2xx status must match the route's reply schema (202
  replies are Tasks); an error reply must match Error;
- a request body the schema refuses must have been refused (4xx): the
  server may not accept what its schema forbids.
A violation raises SchemaViolation (an AssertionError: the test fails).
KH_SCHEMA_CHECK=0 turns it off.
"""

import copy
import json
import os
import re

import jsonschema

ENABLED = os.environ.get("KH_SCHEMA_CHECK", "1") != "0"
OPENAPI_PATH = "/api/v1/openapi.json"

_doc = None  # the OpenAPI document, once fetched
_routes = None  # [(regex, literal segments, path item)]
_validators = {}


class SchemaViolation(AssertionError):
    pass


def _nullable(node):
    """OpenAPI 3.0's nullable: true as JSON Schema (anyOf null)."""
    if isinstance(node, list):
        return [_nullable(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        return {"anyOf": [{"type": "null"}, out]}
    return out


def _load(doc):
    global _doc, _routes
    _doc = {"components": {"schemas": _nullable(doc["components"]["schemas"])}}
    _routes = []
    for tmpl, item in doc["paths"].items():
        rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(tmpl)) + "$"
        literal = sum(1 for s in tmpl.split("/") if s and not s.startswith("{"))
        _routes.append((re.compile(rx), literal, item))
    _routes.sort(key=lambda r: -r[1])


def _ensure(api):
    if _doc is not None:
        return True
    r = api.request("GET", OPENAPI_PATH)
    if r.status != 200:
        return False
    _load(r.json)
    return True


def _operation(method, path):
    path = path.split("?", 1)[0]
    for rx, _, item in _routes:
        if rx.match(path):
            return item.get(method.lower())
    return None


def _validator(schema):
    key = json.dumps(schema, sort_keys=True)
    v = _validators.get(key)
    if v is None:
        root = dict(_nullable(copy.deepcopy(schema)))
        root["components"] = _doc["components"]
        v = jsonschema.Draft202012Validator(root)
        _validators[key] = v
    return v


def _ref(name):
    return {"$ref": "#/components/schemas/" + name}


def _errors(schema, instance):
    errs = sorted(_validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(body)", e.message[:300])
            for e in errs[:5]]


def _json_schema(content):
    return ((content or {}).get("application/json") or {}).get("schema")


def check_exchange(api, method, path, body, resp):
    if not ENABLED or path.split("?", 1)[0] == OPENAPI_PATH or not _ensure(api):
        return
    op = _operation(method, path)
    if op is None:
        return
    what = "%s %s -> %d" % (method, path, resp.status)
    # the request: what the schema refuses, the server must refuse too
    req = _json_schema((op.get("requestBody") or {}).get("content"))
    if body is not None and req is not None and 200 <= resp.status < 300:
        errs = _errors(req, body)
        if errs:
            raise SchemaViolation("%s: accepted a body its schema refuses: %s; body %s"
                                  % (what, errs, json.dumps(body)[:400]))
    # the reply
    if not resp.headers.get("content-type", "").startswith("application/json"):
        return
    schema = None
    if resp.status >= 400:
        schema = _ref("Error")
    elif resp.status == 202:
        schema = _ref("Task")
    elif 200 <= resp.status < 300:
        for code, r in op.get("responses", {}).items():
            if code.startswith("2"):
                schema = _json_schema(r.get("content"))
                break
    if schema is None:
        return
    errs = _errors(schema, resp.json)
    if errs:
        raise SchemaViolation("%s: the reply violates its schema: %s; reply %s"
                              % (what, errs, resp.text[:600]))
