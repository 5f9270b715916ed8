"""The managed overlay's pods against a Redis outside the cluster, as containers: TLS with a private
CA, the documented ACL user, the URL and password from the Secret, the CA from the ConfigMap, both
mounted as the rendered Jobs say. The workers drain the run as that user, over TLS, trusting
only the mounted CA. What Docker cannot show is the egress NetworkPolicy (e2e/test_components.py
checks its shape).

Skips, saying why, where no engine or builder can be had; E2E_DOCKER=1 makes that a failure.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import subprocess
from pathlib import Path

import pytest
from containers import Containers
from dockersystem import READY_TIMEOUT, WORKER_TIMEOUT, System, finish, job_specs
from rendering import REPO, Manifest, render, seed_items
from worklog import assert_drained

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

HOST = "redis.example.internal"
TLS_PORT = 6380
CA_FILE = "/etc/redis-ca/ca.crt"


def documented_acl(password: str) -> list[str]:
    """The ACL SETUSER rules for job2 of docs/security.md, with `password`."""
    text = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    (line,) = [line for line in text.splitlines() if line.startswith("ACL SETUSER job2 ")]
    return [rule.replace(">CHANGE-ME", f">{password}") for rule in line.split()[2:]]


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOST (the private CA itself) and its key, readable by Redis."""
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=DNS:{HOST}"],
        check=True, capture_output=True,
    )  # fmt: skip
    directory.chmod(0o755)
    for path in (cert, key):
        path.chmod(0o644)  # a throw-away key; Redis runs as another user than this test
    return cert, key


def outside_git(url: str, password: str, ca: str) -> list[Manifest]:
    """What the managed overlay expects to exist: the Secret redis-auth and the ConfigMap
    redis-ca."""

    def encoded(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return [
        {
            "kind": "Secret",
            "metadata": {"name": "redis-auth"},
            "data": {"url": encoded(url), "password": encoded(password)},
        },
        {"kind": "ConfigMap", "metadata": {"name": "redis-ca"}, "data": {"ca.crt": ca}},
    ]


def test_the_managed_overlay_drains_over_tls_as_the_documented_acl_user(
    system: System, running: Containers, tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    cert, _ = certificate(tls)
    # The stand-in for the managed server: the in-cluster Redis's container, TLS on TLS_PORT for
    # the clients, plain 6379 only for the probe and this test's admin commands inside it.
    server = dataclasses.replace(
        system.redis,
        args=("redis-server", "--requirepass", system.redis.env["REDIS_PASSWORD"],
              "--tls-port", str(TLS_PORT), "--tls-cert-file", "/tls/server.crt",
              "--tls-key-file", "/tls/server.key", "--tls-ca-cert-file", "/tls/server.crt",
              "--tls-auth-clients", "no", "--save", ""),
        options=(*system.redis.options, "--volume", f"{tls}:/tls:ro"),
    )  # fmt: skip
    # Under the managed endpoint's name, as DNS would give it.
    name = running.start(server, "managed", aliases=[HOST])
    running.wait_ready(name, server, READY_TIMEOUT)
    password = secrets.token_hex(16)
    created = running.run_in(name, ["redis-cli", "-e", "ACL", "SETUSER", *documented_acl(password)])
    assert created.returncode == 0, created

    url = f"rediss://job2@{HOST}:{TLS_PORT}/0?ssl_ca_certs={CA_FILE}"
    objects = [*render("managed"), *outside_git(url, password, cert.read_text())]
    seed, worker = job_specs(objects, tmp_path / "volumes")
    assert worker.env["REDIS_URL"] == url, "the Secret's URL must win over settings.env's"

    workers = [running.start(worker, f"worker-{n}") for n in range(system.parallelism)]
    code, seeded = finish(running, seed, "seed")
    assert code == 0, running.logs(seeded)
    codes = {n: running.wait(n, WORKER_TIMEOUT) for n in workers}
    assert set(codes.values()) == {0}, f"worker exit codes: {codes}"
    assert_drained({n: running.stdout(n) for n in workers}, seed_items())

    # The documented user was refused nothing (ACL LOG lists every denied command and key).
    denied = running.run_in(name, ["redis-cli", "-e", "ACL", "LOG"])
    assert denied.returncode == 0 and not denied.stdout.strip(), denied.stdout
