"""What building the app bundle (FAB) a run sends costs: ``flwr run`` on the
repository reads every file under it (``.venv`` included) before it keeps
the ones ``fab-include`` names; fedsense hands it a staged directory of
those files only (fedsense_tools/fab.py). Both with Flower's own functions,
median of a few builds each; the two bundles must be byte-identical.

    python benchmarks/app_bundle.py [--repeats 3]

Writes benchmarks/results/app_bundle.json.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO, machine, write_result

from flwr.cli.build import build_fab_from_disk  # noqa: E402
from flwr.cli.utils import collect_files  # noqa: E402

from fedsense_tools.fab import staged  # noqa: E402


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repo_seconds, whole = _timed(lambda: build_fab_from_disk(REPO), args.repeats)

    def from_stage() -> tuple[bytes, int]:
        with tempfile.TemporaryDirectory() as tmp, staged(REPO, Path(tmp)) as stage:
            return build_fab_from_disk(stage), len(collect_files(stage))

    staged_seconds, (bundle, kept) = _timed(from_stage, args.repeats)
    result = {
        "benchmark": "app_bundle",
        "machine": machine(),
        "files_under_repository": len(collect_files(REPO)),
        "files_in_bundle": kept,
        "seconds_from_repository": round(repo_seconds, 3),
        "seconds_staged": round(staged_seconds, 3),
        "same_bundle": hashlib.sha256(whole).hexdigest() == hashlib.sha256(bundle).hexdigest(),
        "bundle_bytes": len(bundle),
    }
    write_result("app_bundle", result)


if __name__ == "__main__":
    main()
