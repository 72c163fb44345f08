"""The test servers' port helper: a port lost to another process between the probe and the
bind is retried on a fresh one instead of failing the test."""

from __future__ import annotations

import socket
import subprocess
import sys

from recsys_assets_tests import servers


def test_a_port_taken_before_the_bind_is_retried_on_another(monkeypatch, tmp_path):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    real = servers.free_port
    monkeypatch.setattr(servers, "free_port", lambda: next(ports, None) or real())
    tried, procs = [], []

    def start(port: int) -> int:
        tried.append(port)
        code = f"import socket; socket.socket().bind(('127.0.0.1', {port})); print('ok')"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        procs.append(proc)
        if servers.port_taken(proc.stderr):
            raise servers.PortTaken(f"port {port}")
        assert proc.returncode == 0, proc.stderr
        return port

    try:
        port = servers.on_free_port(start, "a test server")
    finally:
        squatter.close()
    assert tried[0] == taken and port != taken and len(tried) == 2
