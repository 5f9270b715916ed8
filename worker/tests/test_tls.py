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
from rediswq.server import EmbeddedRedis, free_port


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
    for _ in range(5):  # a port found free can be taken before the server binds it
        port = free_port()
        process = subprocess.Popen(
            [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(cert), "--tls-key-file", str(key),
             "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", ""],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        try:
            if _answers(process, url):
                yield url
                return
        finally:
            process.terminate()
            process.wait(timeout=10)
        said = process.communicate()[0].strip()
        if "Address already in use" not in said:
            pytest.skip(f"{server} has no TLS: {said[-200:]}")
    raise AssertionError("found no free port for the TLS server in 5 tries")


def _answers(process: subprocess.Popen[str], url: str) -> bool:
    """True once the server answers on `url`; False if it exited."""
    deadline = time.monotonic() + 10
    while process.poll() is None:
        try:
            # A timeout of its own: a TLS handshake with a plain server on the port hangs.
            with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
                client.ping()
            return True
        except (redis.ConnectionError, redis.TimeoutError):  # not yet, or another's port
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return False


def test_a_tls_port_taken_meanwhile_is_given_up_for_another(
    server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The TLS server exits when its port was taken between free_port() and its start; the
    fixture starts it on another, rather than skipping as if the server had no TLS."""
    given, real = iter([server.port]), free_port
    monkeypatch.setattr(f"{__name__}.free_port", lambda: next(given, 0) or real())
    url = request.getfixturevalue("tls_url")
    assert f":{server.port}/" not in url
    with redis.Redis.from_url(url) as client:
        assert client.ping()


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
