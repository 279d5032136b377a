"""A test-only OpenID Connect provider (there is no IdP package in Debian):
an http.server on loopback with a discovery document, a JWKS holding one
RSA key (made with the `cryptography` module), an authorization endpoint
that at once redirects back with a code for a preset user, and a token
endpoint that checks the PKCE verifier and issues an RS256 ID token.

Knobs for the tests (attributes of Provider, set before a login):
  user    the claims of the next login's ID token (sub, groups, ...)
  alg     "RS256" (default) or "ES256"
  tamper  None, or one of "signature", "aud", "expired", "nonce", "iss",
          "alg-none", "other-key": how the next ID token is spoiled
  verifier_override  a PKCE verifier the daemon is pretended to have sent
  codes   the codes issued: {code: {...}} (a used code is refused)
"""

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _int_b64u(n):
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Provider:
    def __init__(self, client_id="kvmhost"):
        self.client_id = client_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "k1"
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.alg = "RS256"  # or "ES256": the next ID tokens' algorithm (key "e1")
        self.user = {"sub": "alice", "groups": ["ops"]}
        self.tamper = None
        self.verifier_override = None
        self.codes = {}
        self.token_requests = []  # (status, error) of each token request
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.issuer = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def jwks(self):
        pub = self.key.public_key().public_numbers()
        ecp = self.ec.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                          "n": _int_b64u(pub.n), "e": _int_b64u(pub.e)},
                         {"kty": "EC", "use": "sig", "alg": "ES256", "kid": "e1", "crv": "P-256",
                          "x": b64u(ecp.x.to_bytes(32, "big")),
                          "y": b64u(ecp.y.to_bytes(32, "big"))}]}

    def sign(self, claims, key=None, alg="RS256"):
        head = {"alg": alg, "typ": "JWT", "kid": "e1" if alg == "ES256" else self.kid}
        msg = (b64u(json.dumps(head).encode()) + "." +
               b64u(json.dumps(claims).encode())).encode()
        if alg == "none":
            return msg.decode() + "."
        if alg == "ES256":
            r, s = decode_dss_signature(self.ec.sign(msg, ec.ECDSA(hashes.SHA256())))
            return msg.decode() + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        sig = (key or self.key).sign(msg, padding.PKCS1v15(), hashes.SHA256())
        return msg.decode() + "." + b64u(sig)

    def id_token(self, nonce):
        now = int(time.time())
        c = dict(self.user, iss=self.issuer, aud=self.client_id, iat=now, exp=now + 300,
                 nonce=nonce)
        t = self.tamper
        if t == "aud":
            c["aud"] = "someone-else"
        elif t == "expired":
            c["iat"], c["exp"] = now - 3600, now - 600
        elif t == "nonce":
            c["nonce"] = "not-the-nonce"
        elif t == "iss":
            c["iss"] = "http://127.0.0.1:1"
        if t == "alg-none":
            return self.sign(c, alg="none")
        if t == "other-key":
            return self.sign(c, key=self.other)
        tok = self.sign(c, alg=self.alg)
        if t == "signature":
            head, body, sig = tok.split(".")
            # the same signature over a payload that says otherwise
            c2 = dict(c, sub="mallory")
            tok = head + "." + b64u(json.dumps(c2).encode()) + "." + sig
        return tok

    def _handler(prov):
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _json(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                if u.path == "/.well-known/openid-configuration":
                    return self._json(200, {
                        "issuer": prov.issuer,
                        "authorization_endpoint": prov.issuer + "/authorize",
                        "token_endpoint": prov.issuer + "/token",
                        "jwks_uri": prov.issuer + "/jwks",
                        "response_types_supported": ["code"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "code_challenge_methods_supported": ["S256"],
                    })
                if u.path == "/jwks":
                    return self._json(200, prov.jwks())
                if u.path == "/authorize":
                    if (q.get("response_type") != "code" or q.get("client_id") != prov.client_id
                            or q.get("code_challenge_method") != "S256"
                            or not q.get("code_challenge") or not q.get("state")
                            or not q.get("nonce") or "openid" not in q.get("scope", "").split()):
                        return self._json(400, {"error": "invalid_request", "got": q})
                    code = secrets.token_urlsafe(16)
                    prov.codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"],
                                        "redirect_uri": q["redirect_uri"], "used": False}
                    loc = q["redirect_uri"] + "?" + urllib.parse.urlencode(
                        {"code": code, "state": q["state"]})
                    self.send_response(302)
                    self.send_header("Location", loc)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return self._json(404, {"error": "not_found"})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                if self.path != "/token":
                    return self._json(404, {"error": "not_found"})

                def refuse(error, desc):
                    prov.token_requests.append((400, error))
                    return self._json(400, {"error": error, "error_description": desc})
                c = prov.codes.get(form.get("code"))
                if (form.get("grant_type") != "authorization_code" or c is None or c["used"]
                        or form.get("client_id") != prov.client_id
                        or form.get("redirect_uri") != c["redirect_uri"]):
                    return refuse("invalid_grant", "unknown or used code")
                c["used"] = True
                verifier = prov.verifier_override or form.get("code_verifier", "")
                if b64u(hashlib.sha256(verifier.encode()).digest()) != c["challenge"]:
                    return refuse("invalid_grant", "PKCE verification failed")
                prov.token_requests.append((200, None))
                return self._json(200, {"access_token": secrets.token_urlsafe(16),
                                        "token_type": "Bearer", "expires_in": 300,
                                        "id_token": prov.id_token(c["nonce"])})
        return H


def main():
    """Run on its own (the browser test web/tests/sso.mjs): print
    {"issuer": ...} on a line, then read JSON lines on stdin, each setting
    knobs (user, alg, tamper, ...); ends when stdin closes."""
    import sys
    p = Provider(client_id=sys.argv[1] if len(sys.argv) > 1 else "kvmhost")
    print(json.dumps({"issuer": p.issuer}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if line:
            for k, v in json.loads(line).items():
                setattr(p, k, v)
            print(json.dumps({"ok": True}), flush=True)
    p.close()


if __name__ == "__main__":
    main()
