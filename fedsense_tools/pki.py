"""Certificates and keys for a fleet: a CA, the SuperLink's server certificate,
one key pair per device for SuperNode authentication, and the operator's
app-signing key (``fedsense_tools.fab``).

What Flower expects, checked against Flower 1.41: the SuperLink takes a PEM
CA certificate, server certificate and server key (``--ssl-*``); a SuperNode
trusts the CA (``--root-certificates``) and, with authentication, signs with
an elliptic-curve private key in OpenSSH format (a PKCS#8 key is refused with
"Unable to parse the private key file"); the SuperLink learns the matching
public key, one OpenSSH line, from ``flwr supernode register``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

VALID_DAYS = 365
SIGNING_KEY = "app-signing"  # the operator's app-signing key (private)
TRUSTED_ENTITIES = "trusted-entities.yaml"  # its public half, for every device
LOCAL_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class ServerPki:
    ca_cert: Path  # what every device needs to trust the SuperLink
    ca_key: Path  # stays with the operator
    cert: Path  # the SuperLink's certificate, signed by the CA
    key: Path


@dataclass(frozen=True)
class SigningKey:
    private: Path  # stays with the operator: signs the apps devices may run (OpenSSH PEM, Ed25519)
    trusted: Path  # every device's --trusted-entities file: the public key under its id


@dataclass(frozen=True)
class DeviceKey:
    private: Path  # stays on the device (OpenSSH PEM)
    public: Path  # registered on the SuperLink (one OpenSSH line)


def _write(path: Path, data: bytes, private: bool) -> Path:
    """Write ``data``; a private key is created owner-only (0600) from its
    first byte, never readable by others in between."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        path.unlink(missing_ok=True)  # O_EXCL below: a fresh file with fresh permissions
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_server_pki(out: Path, names: tuple[str, ...] = LOCAL_NAMES) -> ServerPki:
    """A new CA and a SuperLink certificate valid for ``names`` (host names or
    IP addresses the devices dial), written under ``out``."""
    if not names:
        raise ValueError("the server certificate needs at least one host name or address")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedsense fleet CA"))
        .issuer_name(_name("fedsense fleet CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    plain = serialization.NoEncryption()
    traditional = serialization.PrivateFormat.TraditionalOpenSSL
    return ServerPki(
        ca_cert=_write(out / "ca.crt", ca_cert.public_bytes(pem), private=False),
        ca_key=_write(out / "ca.key", ca_key.private_bytes(pem, traditional, plain), private=True),
        cert=_write(out / "server.pem", cert.public_bytes(pem), private=False),
        key=_write(out / "server.key", key.private_bytes(pem, traditional, plain), private=True),
    )


def make_device_key(out: Path, name: str) -> DeviceKey:
    """An ECDSA P-384 key pair for one device: ``<name>`` (private, OpenSSH)
    and ``<name>.pub`` (public, OpenSSH), under ``out``."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return DeviceKey(
        private=_write(out / name, private, private=True),
        public=_write(out / f"{name}.pub", public + f" {name}\n".encode(), private=False),
    )


def make_signing_key(out: Path, key_id: str) -> SigningKey:
    """The operator's Ed25519 app-signing key: ``SIGNING_KEY`` (private,
    OpenSSH) and ``TRUSTED_ENTITIES`` (``key_id: ssh-ed25519 ...``, what a
    SuperNode's ``--trusted-entities`` reads), under ``out``."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return SigningKey(
        private=_write(out / SIGNING_KEY, private, private=True),
        trusted=_write(out / TRUSTED_ENTITIES, f"{key_id}: {public.decode()}\n".encode(), private=False),
    )
