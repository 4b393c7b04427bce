"""Fixtures of the tuner's multi-process tests: a fresh PostgreSQL database, a local S3 server (moto)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

ADMIN_URL = os.environ.get("HWTUNE_TEST_POSTGRES_URL")  # a server .ci/run starts; unset: those tests skip


@pytest.fixture
def pg_url():
    """A fresh database on the test server (``HWTUNE_TEST_POSTGRES_URL``); dropped afterwards."""
    if not ADMIN_URL:
        pytest.skip("HWTUNE_TEST_POSTGRES_URL not set (see .ci/run)")
    psycopg = pytest.importorskip("psycopg")
    name = f"hwtune_{uuid.uuid4().hex[:12]}"
    conn = psycopg.connect(str(ADMIN_URL), autocommit=True)
    conn.execute(f"CREATE DATABASE {name}")
    base, _, _ = str(ADMIN_URL).rpartition("/")
    yield f"{base}/{name}"
    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_server(monkeypatch):
    pytest.importorskip("boto3")
    pytest.importorskip("moto")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    import boto3

    deadline = time.monotonic() + 30
    while True:
        try:
            boto3.client("s3").create_bucket(Bucket="hwtune-test")
            break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.3)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)
