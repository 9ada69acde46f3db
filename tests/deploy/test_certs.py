"""``fedkd keys``: CA, SuperLink certificate and SuperNode keys, checked with cryptography."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_ssh_private_key,
    load_ssh_public_key,
)
from fedkd.simulations.cli import main

from fedkd.deploy import certs


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    ]


def test_cli_creates_ca_server_and_device_keys(tmp_path: Path, capsys) -> None:
    out = tmp_path / "certs"
    assert main(["keys", "ca", "--out", str(out)]) == 0
    sans = ["--san", "127.0.0.1", "--san", "localhost", "--san", "::1", "--san", "sl.example"]
    assert main(["keys", "server", "--out", str(out), *sans]) == 0
    assert main(["keys", "device", "node0", "--out", str(tmp_path / "keys")]) == 0

    cert = certs.verify_signed_by(out / "server.pem", out / "ca.crt")
    dns, ips = _sans(cert)
    assert sorted(dns) == ["localhost", "sl.example"]
    assert {ipaddress.ip_address(i) for i in ips} == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True

    key = load_ssh_private_key((tmp_path / "keys" / "node0").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp384r1"
    assert (
        (tmp_path / "keys" / "node0")
        .read_bytes()
        .startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    )
    pub_line = (tmp_path / "keys" / "node0.pub").read_text()
    assert pub_line.startswith("ecdsa-sha2-nistp384 ")
    pub = load_ssh_public_key(pub_line.encode())
    assert pub.public_numbers() == key.public_key().public_numbers()
    for private in (out / "ca.key", out / "server.key", tmp_path / "keys" / "node0"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert "server.pem" in printed and "node0.pub" in printed


def test_certificate_of_another_ca_does_not_verify(tmp_path: Path) -> None:
    certs.make_ca(tmp_path / "a")
    certs.make_ca(tmp_path / "b")
    certs.make_server_cert(tmp_path / "a", ["127.0.0.1"])
    certs.verify_signed_by(tmp_path / "a" / "server.pem", tmp_path / "a" / "ca.crt")
    with pytest.raises(certs.CertError, match="not signed by"):
        certs.verify_signed_by(tmp_path / "a" / "server.pem", tmp_path / "b" / "ca.crt")


def test_user_mistakes_are_one_line_exit_2(tmp_path: Path, capsys) -> None:
    out = str(tmp_path)
    assert main(["keys", "server", "--out", out, "--san", "127.0.0.1"]) == 2
    assert "create the CA first" in capsys.readouterr().err
    assert main(["keys", "ca", "--out", out]) == 0
    assert main(["keys", "ca", "--out", out]) == 2  # never overwrite silently
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    assert main(["keys", "ca", "--out", out, "--force"]) == 0
    assert main(["keys", "server", "--out", out, "--san", "not a name"]) == 2
    assert "neither an IP address nor a DNS name" in capsys.readouterr().err
    assert main(["keys", "device", "../escape", "--out", out]) == 2
