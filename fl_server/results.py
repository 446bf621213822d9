"""Regenerate docs/results.md: every arm of every scenario, over seeds.

    fedsense results [--scenarios cross_user,cross_device] [--arms a,b]
                     [--seeds 0,1,2] [--out runs/results] [--doc docs/results.md] [--reuse]

Each arm is a file in ``configs/experiments/<scenario>/``; each run lands in
``OUT/<scenario>/<arm>/seed-<s>/``. ``--reuse`` keeps runs that already
completed there (to resume an interrupted regeneration); without it every
number comes from a fresh run. A failed run is reported in the table, not
hidden, and the others go on.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fedsense.report import arm_table, mean_std

EXPERIMENTS = Path(__file__).resolve().parent.parent / "configs" / "experiments"
# Table order: baselines, the method, upper bounds, ceiling.
ARM_ORDER = [
    "source_only", "fedbn", "dann", "m3bat_federated", "m3bat_statistics", "m3bat_bn",
    "centralized_source_only", "centralized_dann", "centralized_m3bat", "target_oracle", "target_oracle_bn",
]
ORACLES = ("target_oracle", "target_oracle_bn")
MIN_GAP = 0.02  # a source-only -> oracle gap below this (macro-F1) has no share worth reporting


def arms_of(scenario: str) -> list[str]:
    found = {p.stem for p in (EXPERIMENTS / scenario).glob("*.yaml")}
    if not found:
        raise FileNotFoundError(f"no experiment configs in {EXPERIMENTS / scenario}")
    return [a for a in ARM_ORDER if a in found] + sorted(found - set(ARM_ORDER))


def run_arm(scenario: str, arm: str, seed: int, out: Path, reuse: bool, run: bool = True) -> dict[str, Any]:
    """One run's summary (fresh, or reused when asked and complete). With
    ``run=False`` nothing starts: a run not completed yet is ``missing``."""
    from fl_server.cli import run_experiment
    from fl_server.launcher import RunFailed

    run_dir = out / scenario / arm / f"seed-{seed}"
    summary_path = run_dir / "summary.json"
    if (reuse or not run) and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("status") == "completed":
            return summary
    if not run:
        return {"status": "missing", "seed": seed}
    print(f"\n== {scenario} / {arm} / seed {seed} ==", flush=True)
    if run_dir.exists():  # a fresh run: nothing of an earlier one may be reported as it
        shutil.rmtree(run_dir)
    try:
        run_experiment(EXPERIMENTS / scenario / f"{arm}.yaml", [f"seed={seed}"], str(run_dir))
    except (RunFailed, OSError) as err:
        print(f"run failed: {err}", file=sys.stderr)
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    return {"status": "failed", "error": "no summary written"}


def acceptance_lines(arms: dict[str, list[dict]]) -> list[str]:
    """The checks the adaptation work is judged by. Each comparison uses only
    the seeds that every arm in it has completed, and says which."""

    def seeds(arm: str) -> set[int]:
        return {r.get("seed") for r in arms.get(arm, []) if r.get("status") == "completed"}

    def mean(arm: str, common: set[int]) -> float | None:
        runs = [r for r in arms.get(arm, []) if r.get("seed") in common]
        stat = mean_std(runs, "target.macro_f1")
        return None if stat is None else stat[0]

    def on(*names: str) -> tuple[set[int], str]:
        common = set.intersection(*(seeds(n) for n in names))
        return common, "seeds " + ", ".join(map(str, sorted(common)))

    lines = []
    for arm in (a for a in arms if a.startswith("m3bat")):  # the federated M3BAT arms
        for oracle_arm in (o for o in ORACLES if o in arms):
            common, label = on(arm, "source_only", oracle_arm)
            if common:
                m, so, oracle = (mean(a, common) for a in (arm, "source_only", oracle_arm))
                if oracle - so < MIN_GAP:  # a share of noise would read as a result
                    lines.append(f"- {arm}: no gap to recover: {oracle_arm} − source-only = {oracle - so:+.3f} "
                                 f"(under {MIN_GAP:.2f}; {label})")
                else:
                    share = (m - so) / (oracle - so)
                    lines.append(f"- {arm}: recovers {share:.0%} of the source-only → {oracle_arm} gap "
                                 f"({'meets' if share >= 0.5 else 'misses'} the ≥ 50 % bar; {label})")
        common, label = on(arm, "dann")
        if common:
            d = mean(arm, common) - mean("dann", common)
            lines.append(f"- {arm}: {d:+.3f} vs federated DANN ({'beats' if d > 0 else 'does not beat'} it; {label})")
        common, label = on(arm, "centralized_m3bat")
        if common:
            d = mean(arm, common) - mean("centralized_m3bat", common)
            lines.append(f"- {arm}: {d:+.3f} vs centralized M3BAT "
                         f"({'within' if d >= -0.03 else 'not within'} 3 points; {label})")
    return lines


def render(results: dict[str, dict[str, list[dict]]], seeds: list[int], command: str) -> str:
    parts = [
        "# Results",
        "",
        "Target macro-F1 is measured on the targets' held-out windows, from",
        "confusion matrices summed over clients; mean ± std over seeds "
        f"{', '.join(map(str, seeds))}. Hyperparameters are the defaults of",
        "`fedsense/config.py`, fixed in advance; no target label was used to choose anything.",
        "",
        f"Regenerate with `{command}` (written {time.strftime('%Y-%m-%d')}).",
    ]
    runs = [r for arms in results.values() for rs in arms.values() for r in rs]
    missing = sum(r.get("status") == "missing" for r in runs)
    if missing:
        parts += ["", f"**Partial:** {len(runs) - missing} of {len(runs)} runs are in (the `runs` column says "
                  f"which arm has how many); `{command} --reuse` runs the other {missing} and keeps these."]
    for scenario, arms in results.items():
        parts += ["", f"## {scenario.replace('_', '-')}", "", arm_table(arms), ""]
        parts += acceptance_lines(arms) or ["(acceptance checks need the source-only, DANN, oracle and M3BAT arms)"]
    return "\n".join(parts) + "\n"


def regenerate(
    scenarios: list[str], arms: list[str] | None, seeds: list[int], out: Path, doc: Path, reuse: bool,
    run: bool = True,
) -> Path:
    """Run (or, with ``run=False``, only collect) every arm over the seeds and
    write the Markdown page."""
    results: dict[str, dict[str, list[dict]]] = {}
    for scenario in scenarios:
        chosen = [a for a in arms_of(scenario) if arms is None or a in arms]
        results[scenario] = {a: [run_arm(scenario, a, s, out, reuse, run) for s in seeds] for a in chosen}
        doc.parent.mkdir(parents=True, exist_ok=True)  # rewrite after each scenario: progress survives
        doc.write_text(render(results, seeds, _command(scenarios, arms, seeds)))
    return doc


def _command(scenarios: list[str], arms: list[str] | None, seeds: list[int]) -> str:
    cmd = f"fedsense results --scenarios {','.join(scenarios)} --seeds {','.join(map(str, seeds))}"
    return cmd + (f" --arms {','.join(arms)}" if arms else "")
