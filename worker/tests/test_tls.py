"""`rediss://`: the worker and the seed over TLS, against a TLS-enabled redis-server."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import cli_env, rediswq
from rediswq.logs import messages
from rediswq.server import free_port


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    """A rediss:// URL of a server with a fresh self-signed certificate, trusted via the URL."""
    server, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if not server or not openssl:
        pytest.skip("needs redis-server (built with TLS) and openssl on PATH")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", ""],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.skip(f"{server} has no TLS: {process.communicate()[0].strip()[-200:]}")
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_seed_and_worker_over_tls(tls_url: str) -> None:
    env = cli_env(REDIS_URL=tls_url, WORK_SECONDS="0")
    seeded = rediswq("seed", env=env, stdin=b"secure-1\nsecure-2\n")
    assert seeded.returncode == 0, seeded.stderr
    worked = rediswq("worker", env=env)
    assert worked.returncode == 0, worked.stderr
    lines = messages(worked.stdout)
    assert "Working on secure-1" in lines and "Working on secure-2" in lines
    assert lines[-1] == "Queue empty, exiting"


def test_plain_redis_against_a_tls_port_is_a_clear_error(tls_url: str) -> None:
    plain = tls_url.replace("rediss://", "redis://").split("?")[0]
    result = rediswq("status", "--redis-url", plain, "--redis-wait-timeout", "1", timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("rediswq: error: ")
    assert len(result.stderr.strip().splitlines()) == 1
