"""A real device starts a fresh ClientApp process for every message: what it
imports is paid every time. Only flwr, torch, numpy, yaml and the core may be on the path."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("sklearn", "scipy", "tensorboard", "PIL", "ray", "pandas", "matplotlib", "cryptography.x509",
         "fl_server", "strategies")


def test_the_client_app_imports_nothing_it_does_not_use():
    code = "import json, sys, fl_client.client_app; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    loaded = json.loads(out.stdout)
    assert "torch" in loaded and "fedsense.engine" in loaded  # what it does need (the test can see modules)
    heavy = sorted({m.split(".")[0] if m.split(".")[0] in HEAVY else m for m in loaded
                    if any(m == h or m.startswith(h + ".") for h in HEAVY)})
    assert heavy == [], f"the ClientApp's import path pulls in {heavy}"
