"""The app bundle a run sends (fedsense_tools/fab.py): staged from the app's
own files, signed by the operator, verified by Flower's own SuperNode code."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from flwr.cli.build import build_fab_from_disk
from flwr.proto.fab_pb2 import GetFabResponse
from flwr.superlink.servicer.fleet import fleet_handlers
from flwr.supercore.fab import Fab
from flwr.supernode.start_client_internal import _verify_fab

from fedsense_tools import fab
from fedsense_tools.pki import make_signing_key

PYPROJECT = """[project]
name = "tiny"
version = "1.0.0"

[tool.flwr.app]
publisher = "someone"
{include}

[tool.flwr.app.components]
serverapp = "app.server:app"
clientapp = "app.client:app"
"""


def _app(root, include: bool = True):
    root.mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT.format(include='fab-include = ["app/**/*.py"]' if include else ""))
    for rel, text in {"app/server.py": "app = 1\n", "app/client.py": "app = 2\n", "app/sub/util.py": "x = 3\n",
                      "app/notes.txt": "not included\n", ".venv/lib/big.py": "y = 4\n" * 1000}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_staged_app_builds_the_fab_of_the_app_and_holds_only_its_files(tmp_path):
    app = _app(tmp_path / "app")
    with fab.staged(app, tmp_path / "home") as stage:
        assert stage != app and stage.parent == tmp_path / "home"
        held = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
        assert held == ["app/client.py", "app/server.py", "app/sub/util.py", "pyproject.toml"]
        assert build_fab_from_disk(stage) == build_fab_from_disk(app)  # byte for byte: same hash, same signature
    assert not stage.exists()  # removed once the run is sent
    plain = _app(tmp_path / "plain", include=False)
    with fab.staged(plain, tmp_path / "home") as stage:
        assert stage == plain  # no fab-include: the app directory as it is


def test_a_signed_fab_verifies_with_flowers_own_check_and_nothing_else_does(tmp_path):
    app = _app(tmp_path / "app")
    key = make_signing_key(tmp_path / "keys", fab.KEY_ID)
    assert key.private.stat().st_mode & 0o777 == 0o600
    digest = fab.sign_app(app, key.private, tmp_path / "approvals")
    content = build_fab_from_disk(app)
    assert digest == hashlib.sha256(content).hexdigest()
    trusted = yaml.safe_load(key.trusted.read_text())
    signed = fab.verifications(tmp_path / "approvals", digest)
    assert signed[fab.LICENSE] and _verify_fab(Fab(digest, content, signed), trusted)
    other = yaml.safe_load(make_signing_key(tmp_path / "other", fab.KEY_ID).trusted.read_text())
    assert not _verify_fab(Fab(digest, content, signed), other)  # another operator's key
    assert not _verify_fab(Fab(digest, content + b"!", signed), trusted)  # another app under the same signature
    (app / "app" / "server.py").write_text("app = 'changed'\n")
    assert fab.fab_hash(app) != digest and fab.verifications(tmp_path / "approvals", fab.fab_hash(app)) == {}


@pytest.mark.parametrize("content", ["not json", "[]", '{"k": {"signature": 1, "signed_at": 2}}',
                                     '{"k": {"signature": "s", "signed_at": "2"}}'])
def test_a_damaged_approval_sends_the_fab_unsigned(tmp_path, content):
    digest = "ab" * 32
    (tmp_path / f"{digest}.json").write_text(content)
    assert fab.verifications(tmp_path, digest) == {}


def test_only_a_sha256_names_an_approval(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"k": {"signature": "s", "signed_at": 1}}))
    assert fab.verifications(tmp_path, "x") == {} and fab.verifications(tmp_path, "../x") == {}


def test_the_superlinks_fleet_api_hands_out_the_signature_of_the_fab_it_serves(tmp_path, monkeypatch):
    app = _app(tmp_path / "app")
    key = make_signing_key(tmp_path / "keys", fab.KEY_ID)
    digest = fab.sign_app(app, key.private, tmp_path / "approvals")
    served = {"hash": digest}

    def stored_fab(request, state):  # what Flower's handler returns for a local app: no verification
        response = GetFabResponse()
        response.fab.hash_str, response.fab.content = served["hash"], b"fab"
        return response

    monkeypatch.setattr(fleet_handlers, "get_fab", stored_fab)
    fab.serve_signatures(tmp_path / "approvals")
    fab.serve_signatures(tmp_path / "approvals")  # once only
    answer = fleet_handlers.get_fab(request=None, state=None)
    assert dict(answer.fab.verifications) == fab.verifications(tmp_path / "approvals", digest)
    served["hash"] = "cd" * 32  # a FAB nobody signed
    assert dict(fleet_handlers.get_fab(request=None, state=None).fab.verifications) == {}
