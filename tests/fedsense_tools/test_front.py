"""The TLS front's configuration: the Fleet API's calls pass, nothing else;
checked by nginx itself where it is installed (the live refusals are in
test_fleet_deployment.py, ``make test-fleet``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from fedsense_tools import front
from fedsense_tools.fleetstate import FleetError
from fedsense_tools.pki import make_server_pki


def test_the_front_passes_exactly_the_fleet_calls_to_the_superlink_on_loopback(tmp_path):
    pki = make_server_pki(tmp_path / "certs")
    text = front.front_config(tmp_path / "front", "0.0.0.0:9092", 9093, pki)
    passed = re.search(r"location ~ \^/v1/fleet/\(\?:([a-z|-]+)\)\$", text)
    assert passed and set(passed.group(1).split("|")) == set(front.FLEET_CALLS)
    assert "server 127.0.0.1:9093;" in text and "listen 0.0.0.0:9092 ssl;" in text
    assert "limit_except POST { deny all; }" in text and "location / { return 404; }" in text
    assert f"proxy_ssl_trusted_certificate {pki.ca_cert};" in text and "proxy_ssl_verify on;" in text
    assert "/v1/control" not in text.replace("# ", "").split("location / ")[0].split("http {")[1]


@pytest.mark.skipif(shutil.which("nginx") is None and not os.access("/usr/sbin/nginx", os.X_OK),
                    reason="nginx is not installed (make test-fleet needs it; .ci/run installs it)")
def test_nginx_accepts_the_configuration(tmp_path):
    pki = make_server_pki(tmp_path / "certs")
    front.write_front(tmp_path / "front", "127.0.0.1:9092", 9093, pki)
    proc = subprocess.run([front.nginx_binary(), "-t", *front.front_args(tmp_path / "front")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_missing_nginx_is_named_with_how_to_get_it(monkeypatch):
    monkeypatch.setattr(front.shutil, "which", lambda name: None)
    monkeypatch.setattr(front.os, "access", lambda path, mode: False)
    with pytest.raises(FleetError, match="apt-get install nginx"):
        front.nginx_binary()
