"""Credentials made in the test: nkeys, operator/account/user JWTs and .creds
files (decentralised auth), and a CA with a server certificate for TLS."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class NKey:
    """An nkey pair of one kind (operator, account or user)."""

    def __init__(self, prefix: int) -> None:
        self.seed = nkeys.encode_seed(os.urandom(32), prefix)
        self._kp = nkeys.from_seed(self.seed)
        self.public = self._kp.public_key.decode()

    def sign(self, data: bytes) -> bytes:
        signed: bytes = self._kp.sign(data)
        return signed


def operator_key() -> NKey:
    return NKey(nkeys.PREFIX_BYTE_OPERATOR)


def account_key() -> NKey:
    return NKey(nkeys.PREFIX_BYTE_ACCOUNT)


def user_key() -> NKey:
    return NKey(nkeys.PREFIX_BYTE_USER)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (ed25519-nkey) for `subject`, signed by `issuer`."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.sha512(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest[:32]).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = _b64(issuer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
}


class Operator:
    """An operator with one JetStream-enabled account, a system account, and users."""

    def __init__(self) -> None:
        self.key = operator_key()
        self.account = account_key()
        self.system = account_key()
        self.jwt = jwt(
            self.key,
            self.key.public,
            "angzarr-test-operator",
            {"type": "operator", "system_account": self.system.public},
        )
        self.account_jwt = jwt(
            self.key, self.account.public, "app", {"type": "account", "limits": UNLIMITED}
        )
        self.system_jwt = jwt(
            self.key,
            self.system.public,
            "SYS",
            {"type": "account", "limits": {**UNLIMITED, "mem_storage": 0, "disk_storage": 0}},
        )

    def server_config(self) -> str:
        return (
            f"operator: {self.jwt}\n"
            f"system_account: {self.system.public}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {self.account.public}: {self.account_jwt}\n"
            f"  {self.system.public}: {self.system_jwt}\n"
            "}\n"
        )

    def creds(self, path: Path, *, signer: NKey | None = None) -> Path:
        """Write a .creds file for a new user of the account (signed by `signer`)."""
        user = user_key()
        token = jwt(
            signer or self.account,
            user.public,
            "app-user",
            {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
        )
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{token}\n"
            "------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.seed.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        return path


class TLSFiles:
    """A CA and a server certificate for 127.0.0.1/localhost, written to `directory`."""

    def __init__(self, directory: Path, name: str = "angzarr test CA") -> None:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / "ca.pem"
        self.cert = directory / "server.pem"
        self.key = directory / "server-key.pem"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def server_config(self) -> str:
        return f'tls {{\n  cert_file: "{self.cert}"\n  key_file: "{self.key}"\n  timeout: 2\n}}\n'
