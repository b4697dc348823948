"""Throwaway TLS material for the simulated clouds, and client certificates for the certificate flow.

`make_server_tls(directory)` creates a CA and a server certificate for 127.0.0.1, ::1 and localhost, writes
`server.pem`/`server.key` (for uvicorn) and `ca-bundle.pem` (the CA followed by certifi's bundle, so one file
can be trusted process-wide without breaking real HTTPS). How clients trust the bundle:

- httpx 0.28 (msgraph-sdk, the Exchange client): reads `SSL_CERT_FILE` when a Client is *created* with the default
  `verify=True` and `trust_env=True`. A client created before the variable was set keeps its old trust store; a
  client that must not depend on the environment passes `verify=ssl.create_default_context(cafile=bundle)`.
- requests (azure-identity, azure-core): reads `REQUESTS_CA_BUNDLE` (or `CURL_CA_BUNDLE`) per request.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ServerTls:
    """Paths of the files one simulator run needs."""

    certfile: str  # server certificate chain (leaf + CA), PEM
    keyfile: str  # server private key, PEM, unencrypted
    ca_bundle_path: str  # the CA followed by certifi's bundle


@dataclass(frozen=True)
class ClientCertificate:
    """A self-signed client certificate for app registrations using the certificate flow."""

    pem_bytes: bytes  # private key + certificate, PEM (what CertificateCredential(certificate_data=...) takes)
    pfx_bytes: bytes  # PKCS#12, encrypted with the password given (or unencrypted)
    cert_pem: bytes  # the public certificate only: what `Tenant.register_app(certificate_pem=...)` takes


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_server_tls(directory: str | Path) -> ServerTls:
    """Create a CA and a loopback server certificate under `directory` and return the file paths."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _new_key()
    ca_name = _name("ctcs simulator CA")
    ca_builder = _validity(x509.CertificateBuilder(), 30)
    ca_cert = (
        ca_builder.subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _new_key()
    alt_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    server_cert = (
        _validity(x509.CertificateBuilder(), 30)
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Python 3.13+ (VERIFY_X509_STRICT) insists on the authority key identifier.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    certfile = folder / "server.pem"
    keyfile = folder / "server.key"
    bundle = folder / "ca-bundle.pem"
    certfile.write_bytes(_pem(server_cert) + _pem(ca_cert))
    keyfile.write_bytes(_key_pem(server_key))
    keyfile.chmod(0o600)
    bundle.write_bytes(_pem(ca_cert) + b"\n" + Path(certifi.where()).read_bytes())
    return ServerTls(str(certfile), str(keyfile), str(bundle))


def make_client_certificate(password: str | None = None, *, common_name: str = "ctcs test app") -> ClientCertificate:
    """A fresh self-signed certificate with its key, as PEM (key+cert), PFX (with `password`) and public PEM."""
    key = _new_key()
    cert = (
        _validity(x509.CertificateBuilder(), 365)
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    pfx = pkcs12.serialize_key_and_certificates(common_name.encode(), key, cert, None, encryption)
    return ClientCertificate(pem_bytes=_key_pem(key) + _pem(cert), pfx_bytes=pfx, cert_pem=_pem(cert))
