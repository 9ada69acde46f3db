"""TLS certificates and SuperNode keys for a Flower deployment, with ``cryptography`` only.

Three kinds of files, matching what Flower 1.42 expects:

* a certificate authority (``ca.crt``, ``ca.key``) that SuperNodes and the ``flwr`` CLI
  trust (``--root-certificates``, ``root-certificates`` in ``config.toml``);
* the SuperLink's server certificate (``server.pem``, ``server.key``), signed by the CA,
  with the subject alternative names (DNS names and IP addresses) the nodes connect to;
* per-device EC P-384 key pairs for SuperNode authentication: the private key in
  OpenSSH format (``--auth-supernode-private-key``) and the public key as an OpenSSH
  ``.pub`` line (``flwr supernode register``).

Private keys are written with mode 0600. Existing files are never overwritten unless
``force`` is set.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "SERVER_CERT",
    "SERVER_KEY",
    "CertError",
    "CertPaths",
    "make_ca",
    "make_device_key",
    "make_server_cert",
    "verify_signed_by",
]

logger = logging.getLogger(__name__)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"


class CertError(ValueError):
    """A key or certificate cannot be created or read (the message names the file)."""


@dataclass(frozen=True)
class CertPaths:
    """Where a certificate (or public key) and its private key were written."""

    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, *, private: bool, force: bool) -> None:
    """Write ``data`` to ``path``; private files get mode 0600 from the start."""
    if path.exists() and not force:
        raise CertError(f"{path} already exists (pass --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedkd"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(
    out: str | Path, *, common_name: str = "fedkd CA", days: int = 365, force: bool = False
) -> CertPaths:
    """Create a self-signed certificate authority in ``out`` (``ca.crt``, ``ca.key``).

    Parameters
    ----------
    out : str or Path
        Output directory (created if missing).
    common_name : str, optional
        Subject common name of the CA.
    days : int, optional
        Validity in days.
    force : bool, optional
        Overwrite existing files.

    Returns
    -------
    CertPaths
        Paths of the CA certificate and its private key.
    """
    if days < 1:
        raise CertError(f"--days must be >= 1, got {days}")
    out = Path(out)
    key = ec.generate_private_key(ec.SECP384R1())
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    paths = CertPaths(cert=out / CA_CERT, key=out / CA_KEY)
    _write(paths.key, _key_pem(key), private=True, force=force)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), private=False, force=force)
    logger.info("wrote CA %s and key %s", paths.cert, paths.key)
    return paths


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    for path in (cert_path, key_path):
        if not path.is_file():
            raise CertError(f"{path}: not found (create the CA first: fedkd keys ca --out DIR)")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as err:
        raise CertError(f"{ca_dir}: cannot read the CA certificate or key ({err})") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path}: expected an EC private key")
    return cert, key


def _san(value: str) -> x509.GeneralName:
    """An IP address SAN when ``value`` parses as one, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not value or any(c.isspace() for c in value) or "/" in value or ":" in value:
        raise CertError(f"--san {value!r} is neither an IP address nor a DNS name")
    return x509.DNSName(value)


def make_server_cert(
    out: str | Path,
    sans: list[str] | tuple[str, ...],
    *,
    ca_dir: str | Path | None = None,
    days: int = 365,
    force: bool = False,
) -> CertPaths:
    """Create the SuperLink's certificate (``server.pem``, ``server.key``) signed by the CA.

    Parameters
    ----------
    out : str or Path
        Output directory.
    sans : list of str
        Subject alternative names: IP addresses (``127.0.0.1``, ``::1``) and DNS names
        (``localhost``, ``superlink.example.org``). Clients verify the address they dial
        against these, so name every address the SuperLink is reached at.
    ca_dir : str or Path, optional
        Directory holding ``ca.crt`` and ``ca.key`` (default: ``out``).
    days : int, optional
        Validity in days.
    force : bool, optional
        Overwrite existing files.

    Returns
    -------
    CertPaths
        Paths of the server certificate and its private key.
    """
    if not sans:
        raise CertError("name at least one --san (e.g. --san 127.0.0.1 --san localhost)")
    if days < 1:
        raise CertError(f"--days must be >= 1, got {days}")
    out = Path(out)
    ca_cert, ca_key = _load_ca(Path(ca_dir) if ca_dir is not None else out)
    names = [_san(s) for s in dict.fromkeys(sans)]
    dns = [s for s in sans if isinstance(_san(s), x509.DNSName)]
    key = ec.generate_private_key(ec.SECP384R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns[0] if dns else sans[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )
    paths = CertPaths(cert=out / SERVER_CERT, key=out / SERVER_KEY)
    _write(paths.key, _key_pem(key), private=True, force=force)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), private=False, force=force)
    logger.info("wrote server certificate %s for %s", paths.cert, ", ".join(sans))
    return paths


def make_device_key(name: str, out: str | Path, *, force: bool = False) -> CertPaths:
    """Create a SuperNode authentication key pair: EC P-384, OpenSSH format.

    Parameters
    ----------
    name : str
        File name of the private key (``NAME``); the public key is ``NAME.pub``.
    out : str or Path
        Output directory.
    force : bool, optional
        Overwrite existing files.

    Returns
    -------
    CertPaths
        ``cert`` is the public key (``NAME.pub``), ``key`` the private key.
    """
    if not name or "/" in name or name.startswith(".") or name.endswith(".pub"):
        raise CertError(f"device name {name!r} must be a plain file name (no '/', no '.pub')")
    out = Path(out)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    paths = CertPaths(cert=out / f"{name}.pub", key=out / name)
    _write(paths.key, private, private=True, force=force)
    _write(paths.cert, public + f" {name}\n".encode(), private=False, force=force)
    logger.info("wrote device key %s and public key %s", paths.key, paths.cert)
    return paths


def verify_signed_by(cert_path: str | Path, ca_path: str | Path) -> x509.Certificate:
    """Check that ``cert_path`` is currently valid and signed by the CA at ``ca_path``.

    Returns the certificate; raises :class:`CertError` if the check fails.
    """
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    except (OSError, ValueError) as err:
        raise CertError(f"cannot read {cert_path} or {ca_path} ({err})") from err
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as err:
        raise CertError(f"{cert_path} is not signed by {ca_path} ({err})") from err
    except Exception as err:  # cryptography raises InvalidSignature
        raise CertError(f"{cert_path} is not signed by {ca_path} ({err!r})") from err
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertError(f"{cert_path} is not valid now")
    return cert
