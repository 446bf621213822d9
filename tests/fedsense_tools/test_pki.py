"""Certificates and device keys in the formats Flower's SuperLink and SuperNode accept."""

from __future__ import annotations

import ipaddress
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from fedsense_tools.pki import make_device_key, make_server_pki


def test_server_certificate_is_signed_by_the_ca_for_local_names(tmp_path):
    pki = make_server_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(pki.cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == ca.subject
    # verify the signature with the CA's public key (raises if it does not match)
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                           cert.signature_hash_algorithm)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    for private in (pki.key, pki.ca_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_extra_names_for_a_real_superlink(tmp_path):
    pki = make_server_pki(tmp_path, ("fl.example.org", "192.168.1.10"))
    san = x509.load_pem_x509_certificate(pki.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.10")]


def test_device_key_pair_is_openssh_p384(tmp_path):
    key = make_device_key(tmp_path, "device-0")
    private = serialization.load_ssh_private_key(key.private.read_bytes(), password=None)
    public = serialization.load_ssh_public_key(key.public.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert private.public_key().public_numbers() == public.public_numbers()
    assert key.private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert stat.S_IMODE(key.private.stat().st_mode) == 0o600
    assert make_device_key(tmp_path, "device-1").public.read_bytes() != key.public.read_bytes()
