#!/usr/bin/env python3
"""Benchmark keys and tokens: writes into DIR an RSA key (kid demo), an EC P-256 key (kid es),
an HMAC secret (kid hs), the correctness-gate tokens, 10,000 distinct RS256 and ES256 tokens,
and N distinct HS256 tokens for the memory run.

usage: tokens.py DIR [N_HS256]
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISS, AUD = "scopegate-demo", "commerce-api"
ALLOWED = "read_orders read_products"   # GET /v2/orders/{id} needs read_orders
DENIED = "read_products"                # -> 403 there


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


class Signer:
    def __init__(self, alg, kid, key):
        self.alg, self.kid, self.key = alg, kid, key
        self.head = segment({"alg": alg, "kid": kid, "typ": "JWT"})

    def sign(self, claims) -> str:
        signing_input = f"{self.head}.{segment(claims)}"
        data = signing_input.encode()
        if self.alg == "RS256":
            sig = self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = hmac.new(self.key, data, hashlib.sha256).digest()
        return f"{signing_input}.{b64(sig)}"


def claims(now, n, scope=ALLOWED, exp_in=7200, aud=AUD):
    return {"sub": f"user-{n}", "client_id": "bench", "iss": ISS, "aud": aud,
            "iat": now, "exp": now + exp_in, "scope": scope}


def write_pem(path, key):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(path.replace(".key.", ".pub."), "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    out = sys.argv[1]
    n_hs = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    now = int(time.time())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    write_pem(os.path.join(out, "rs.key.pem"), rsa_key)
    write_pem(os.path.join(out, "es.key.pem"), ec_key)
    secret = os.urandom(32).hex().encode()
    with open(os.path.join(out, "hs.secret"), "wb") as f:
        f.write(secret)
    signers = {"rs": Signer("RS256", "demo", rsa_key), "es": Signer("ES256", "es", ec_key)}
    for name, s in signers.items():
        gate = {
            "allowed": s.sign(claims(now, 0)),
            "noscope": s.sign(claims(now, 1, scope=DENIED)),
            "expired": s.sign(claims(now - 7200, 2, exp_in=3600)),
            "wrongaud": s.sign(claims(now, 3, aud="another-api")),
        }
        for case, token in gate.items():
            write_lines(os.path.join(out, f"{name}.{case}.txt"), [token])
        write_lines(os.path.join(out, f"{name}.mix.txt"), [gate["allowed"], gate["noscope"]])
        write_lines(os.path.join(out, f"{name}.10k.txt"),
                    [s.sign(claims(now, 1000 + i)) for i in range(10_000)])
    hs = Signer("HS256", "hs", secret)
    write_lines(os.path.join(out, "hs.distinct.txt"),
                [hs.sign(claims(now, 2_000_000 + i)) for i in range(n_hs)])


if __name__ == "__main__":
    main()
