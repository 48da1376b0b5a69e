"""Throwaway certificates for the demo and the serve command (never for production)."""
from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from pathlib import Path
from typing import Tuple


def make_self_signed(folder: Path, key_type: str = "ec") -> Tuple[str, str]:
    """(certificate and key PEM path, the same path as CA) for CN=localhost."""
    path = folder / f"demo-{key_type}.pem"
    try:
        _with_cryptography(path, key_type)
    except ImportError:
        _with_openssl_command(path, key_type)
    return str(path), str(path)


def _with_cryptography(path: Path, key_type: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    os.chmod(path, 0o600)


def _with_openssl_command(path: Path, key_type: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("making a demo certificate needs the cryptography package or the "
                           "openssl command (pip install cryptography, or apt-get install openssl)")
    key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key_type == "ec" \
        else ["-newkey", "rsa:2048"]
    subprocess.run([openssl, "req", "-x509", *key_args, "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(path), "-out", str(path) + ".crt"], check=True, capture_output=True)
    path.write_bytes(Path(str(path) + ".crt").read_bytes() + path.read_bytes())
