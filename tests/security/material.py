"""Throwaway TLS material and users made at test time: nothing secret is ever committed.

``make_material`` writes, into a temporary directory, a self-signed CA, a server certificate for
``127.0.0.1``/``localhost`` signed by it, the broker's PKCS12 keystore (checked with ``keytool``,
so the JVM can read it), and a users file for ``kafka.sh --scram-users``. Passwords are random
per run.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Material", "make_material", "make_ca", "make_server_cert"]


@dataclass(frozen=True)
class Material:
    directory: Path
    ca_file: Path
    """PEM of the test CA: what clients must trust."""
    cert_file: Path
    key_file: Path
    users: dict[str, str] = field(repr=False)
    users_file: Path = field(repr=False)


def _run(*command: str, cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} {command[1]} failed: {done.stderr[-2000:]}")


def make_ca(directory: Path, name: str = "transfer-bridge test CA") -> tuple[Path, Path]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.pem", directory / "ca.key"
    _run(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        "-keyout", key.name, "-out", cert.name, "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def make_server_cert(directory: Path, ca: tuple[Path, Path], *, name: str = "server") -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 and localhost signed by ``ca``: (chain PEM, key PEM)."""
    ca_cert, ca_key = ca
    cert, key, csr, ext = (directory / f"{name}.{suffix}" for suffix in ("pem", "key", "csr", "ext"))
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key.name, "-out", csr.name,
         "-subj", "/CN=localhost", cwd=directory)  # fmt: skip
    _run("openssl", "x509", "-req", "-in", csr.name, "-CA", str(ca_cert), "-CAkey", str(ca_key),
         "-CAcreateserial", "-sha256", "-days", "2", "-extfile", ext.name, "-out", cert.name, cwd=directory)  # fmt: skip
    return cert, key


def make_material(directory: Path, users: tuple[str, ...] = ("bridge", "other")) -> Material:
    ca = make_ca(directory)
    cert, key = make_server_cert(directory, ca)
    store_password = secrets.token_urlsafe(18)
    (directory / "server.keystore.password").write_text(store_password)
    _run("openssl", "pkcs12", "-export", "-in", cert.name, "-inkey", key.name, "-certfile", str(ca[0]),
         "-name", "broker", "-out", "server.keystore.p12", "-passout", f"pass:{store_password}", cwd=directory)  # fmt: skip
    _run("keytool", "-list", "-storetype", "PKCS12", "-keystore", "server.keystore.p12",
         "-storepass", store_password, cwd=directory)  # fmt: skip
    passwords = {user: secrets.token_urlsafe(24) for user in users}
    users_file = directory / "users.txt"
    users_file.write_text("".join(f"{user} {password}\n" for user, password in passwords.items()))
    for secret in (directory / "server.keystore.password", users_file, key, ca[1]):
        secret.chmod(0o600)
    return Material(directory, ca[0], cert, key, passwords, users_file)
