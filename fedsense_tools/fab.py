"""The app bundle (FAB) a run sends: built from the app's own files, and on
a locked fleet run only if the operator signed it.

``flwr run DIR`` reads every file under DIR before it keeps those
``[tool.flwr.app] fab-include`` names: from this repository, 47,000 files
of ``.venv`` for 193 of the app's (18 s under load). :func:`staged` hands it
a directory holding only those, which builds the same bytes.

Flower 1.42's SuperNode started with ``--trusted-entities FILE`` (key id ->
Ed25519 public key, OpenSSH) runs a run's app only if the FAB it fetches
carries a verification by one of those keys: an Ed25519 signature of the
signing time (8 bytes, big-endian) followed by the FAB's SHA-256
(``flwr.supernode.start_client_internal._verify_fab``); otherwise it
answers every message of the run with the error "The FAB could not be
verified." and runs nothing. In this distribution the SuperLink attaches
verifications only to apps fetched from Flower Hub, so a SuperNode with
trusted entities would refuse every local app.

Here the operator signs the FAB of the app a run is about to send
(:func:`sign_app`; built by Flower's own deterministic builder, the one
``flwr run`` uses, from the staged directory ``flwr run`` is then given) into an approvals directory, and the SuperLink, started
through this module (``python -m fedsense_tools.fab --approvals DIR --
<flower-superlink arguments>``), attaches the signature found there for the
FAB's hash when a device fetches it (:func:`serve_signatures`, Flower 1.42
only). The SuperLink holds no private key and checks nothing: the devices
verify, with Flower's own code. An app sent without the operator's
signature — by anyone who reaches the Control API, the operator included —
is refused by every device; a signature file someone else writes does not
verify.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import re
import shutil
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedsense.fileio import atomic_write_bytes

KEY_ID = "fedsense-operator"  # the name devices know the operator's key by (trusted entities)
LICENSE = "valid_license"  # the SuperNode requires this entry before it looks at signatures
SIGNED_BY = "signed by the fleet operator (fedsense_tools.fab)"
FLOWER = "1.42."  # the release whose SuperLink internals serve_signatures wraps
HASH = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger("fedsense.fab")


@contextmanager
def staged(app_dir: Path, under: Path) -> Iterator[Path]:
    """A fresh directory under ``under`` holding the app's ``pyproject.toml``
    and the files its ``fab-include`` patterns name, removed afterwards;
    ``app_dir`` itself when its pyproject names no such patterns."""
    app_dir = Path(app_dir)
    app = tomllib.loads((app_dir / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    patterns = app.get("fab-include", [])
    if not patterns:
        yield app_dir
        return
    Path(under).mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="app-", dir=under))
    try:
        files = {"pyproject.toml"} | {
            f.relative_to(app_dir).as_posix() for p in patterns for f in app_dir.glob(p)
            if f.is_file() and not f.is_symlink()
        }
        for rel in sorted(files):
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(app_dir / rel, stage / rel)
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def fab_hash(app_dir: Path) -> str:
    """SHA-256 of the FAB ``flwr run app_dir`` sends (Flower's builder: fixed
    file dates and order, so the same files give the same bytes)."""
    from flwr.cli.build import build_fab_from_disk

    return hashlib.sha256(build_fab_from_disk(Path(app_dir))).hexdigest()


def sign_app(app_dir: Path, key: Path, approvals: Path) -> str:
    """Sign the FAB of ``app_dir`` with the operator's Ed25519 ``key``
    (OpenSSH private key) into ``approvals/<hash>.json``; returns the hash."""
    from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign, load_private_key, sign_message

    digest = fab_hash(app_dir)
    signed_at = int(time.time())
    signature = sign_message(load_private_key(Path(key)), create_message_to_sign(bytes.fromhex(digest), signed_at))
    record = {"signature": base64.urlsafe_b64encode(signature).decode().rstrip("="), "signed_at": signed_at}
    atomic_write_bytes(Path(approvals) / f"{digest}.json", (json.dumps({KEY_ID: record}) + "\n").encode())
    return digest


def verifications(approvals: Path, digest: str) -> dict[str, str]:
    """What the SuperLink attaches to the FAB with this hash: the signatures
    in ``approvals/<hash>.json`` in Flower's verification format, or nothing
    (no file, or one that is not a JSON object of signature records)."""
    if not HASH.fullmatch(digest):
        return {}
    path = Path(approvals) / f"{digest}.json"
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("approval %s unreadable (%s): the FAB goes out unsigned", path, err)
        return {}
    if not isinstance(records, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("signature"), str) and type(r.get("signed_at")) is int
        for r in records.values()
    ):
        log.warning("approval %s is not {key id: {signature, signed_at}}: the FAB goes out unsigned", path)
        return {}
    return {LICENSE: SIGNED_BY, **{str(k): json.dumps(r) for k, r in records.items()}}


def serve_signatures(approvals: Path) -> None:
    """In this (SuperLink) process: every FAB the Fleet API hands a device
    carries the signatures of its hash found in ``approvals``."""
    import flwr

    if not flwr.__version__.startswith(FLOWER):
        raise RuntimeError(f"fedsense_tools.fab wraps Flower {FLOWER}x's Fleet API; this is {flwr.__version__}")
    from flwr.superlink.servicer.fleet import fleet_handlers

    original = fleet_handlers.get_fab
    if getattr(original, "fedsense_signed", False):
        return

    def get_fab(request, state):  # the Fleet API's GetFab, HTTP and gRPC alike
        response = original(request=request, state=state)
        if response.HasField("fab"):
            response.fab.verifications.update(verifications(approvals, response.fab.hash_str))
        return response

    get_fab.fedsense_signed = True  # type: ignore[attr-defined]
    fleet_handlers.get_fab = get_fab


def superlink_prefix(approvals: Path) -> list[str]:
    """What starts a SuperLink that serves the signatures in ``approvals``;
    ``flower-superlink``'s own arguments follow."""
    return [sys.executable, "-m", "fedsense_tools.fab", "--approvals", str(approvals), "--"]


def main(argv: list[str] | None = None) -> None:
    """``python -m fedsense_tools.fab --approvals DIR -- <flower-superlink arguments>``."""
    parser = argparse.ArgumentParser(prog="python -m fedsense_tools.fab",
                                     description="flower-superlink that hands devices the operator's app signatures")
    parser.add_argument("--approvals", required=True, help="directory of <fab sha256>.json signatures")
    parser.add_argument("superlink", nargs=argparse.REMAINDER, help="-- then flower-superlink's arguments")
    args = parser.parse_args(argv)
    serve_signatures(Path(args.approvals).expanduser().resolve())
    from flwr.superlink.cli import flower_superlink

    rest = args.superlink[1:] if args.superlink[:1] == ["--"] else args.superlink
    sys.argv = ["flower-superlink", *rest]
    flower_superlink()


if __name__ == "__main__":
    main()
