"""The experiment API: run one experiment end to end (Flower's simulation
engine on a SuperLink of its own, a local fleet's real SuperLink and
SuperNodes, or centralized training), resume one, run it over seeds,
convert its data. ``fedsense run``, ``fedsense fleet run`` and ``fedsense
results``, the benchmarks and the tests call these.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedsense import configfile as config_mod
from fedsense.centralized import run_centralized
from fedsense.checkpoint import load_resume
from fedsense.config import Config, ConfigError
from fedsense.data.clients import num_clients
from fedsense.data.loaders import build_dataset
from fedsense.data.npz import save_npz
from fedsense.data.shifts import NO_SHIFT_HINT, describe as describe_shift
from fedsense.fileio import private_dir
from fedsense.report import dotted, mean_std
from fedsense.rundir import RunDir, new_run_dir, resolve_run_dir
from fedsense_tools import fab, launcher
from fedsense_tools.fleetstate import Fleet, FleetError


def _absolute_overrides(cfg: Config, out: Path) -> list[str]:
    """Overrides that pin every path to an absolute one: the ServerApp and
    ClientApps run in other processes with other working directories."""
    pins = [f"output.dir={out}"]
    if cfg.data.path:
        pins.append(f"data.path={Path(cfg.data.path).expanduser().resolve()}")
    if cfg.data.cache_dir:
        pins.append(f"data.cache_dir={Path(cfg.data.cache_dir).expanduser().resolve()}")
    return pins


def _replied(rec: dict) -> str:
    """`` 2/3 replied`` when some sampled client did not reply usefully, else nothing."""
    clients = rec.get("clients", {})
    if clients.get("replied", 0) == clients.get("sampled", 0):
        return ""
    return f"  {clients['replied']}/{clients['sampled']} replied"


class Progress:
    """Prints each new line of a run's metrics.jsonl as a one-line round report
    (rounds up to ``done``, completed before a resume, are not repeated)."""

    def __init__(self, run_dir: Path, rounds: int, done: int = 0) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.rounds = rounds
        self.done = done
        self.seen = 0
        self.durations: list[float] = []  # this attempt's rounds, as the server timed them

    def eta(self, remaining: int) -> float:
        """Seconds left: the rounds to go times the mean round so far, the
        first left out once there are others (it carries one-off costs:
        devices' first fits, Ray's actors warming up); start-up never counts."""
        typical = self.durations[1:] or self.durations
        return remaining * sum(typical) / len(typical) if typical else 0.0

    def __call__(self) -> None:
        if not self.path.exists():
            return
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        for line in lines[self.seen :]:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # being written: read it next time
                return
            r = rec["round"]
            self.seen += 1
            if r <= self.done:
                continue
            self.durations.append(float(rec.get("seconds", 0.0)))
            eta = self.eta(self.rounds - r)
            fmt = lambda role: (  # noqa: E731
                f"{rec[role]['macro_f1']:.4f}" if role in rec else "  -   "
            )
            print(
                f"round {r:>3}/{self.rounds}  {rec.get('seconds', 0):6.1f}s  "
                f"target macro-F1 {fmt('target')}  source macro-F1 {fmt('source')}  "
                f"ETA {eta:5.0f}s{_replied(rec)}",
                flush=True,
            )


RUNNING: dict[str, Path] = {}  # the run directory of the federation under way (for the stop message)


def failure_reason(err: Exception) -> str:
    """The first line of why a run failed (from its summary.json when the
    ServerApp wrote one), and where the whole story is."""
    where = RUNNING.get("dir")
    summary = where / "summary.json" if where else None
    if summary is not None and summary.is_file():
        try:
            error = json.loads(summary.read_text()).get("error") or ""
        except (OSError, ValueError):
            error = ""
        if error:
            return f"{error.splitlines()[0]}\n  full error: {summary} (and {where / 'flower' / 'superlink.log'})"
    return str(err)


def run_experiment(
    config_file: str | Path,
    overrides: list[str],
    out: str | None = None,
    verbose: bool = False,
    fleet: str | Path | None = None,
) -> Path:
    """Run one experiment end to end; returns its run directory. With
    ``fleet`` (a directory of ``fedsense fleet up``) the federation runs on
    that fleet's SuperLink and SuperNodes instead of a simulation.

    Raises ConfigError/DatasetError for bad input, FleetError for a fleet
    that cannot serve it (before any run directory is made), and
    launcher.RunFailed when the Flower run does not complete.
    """
    config_file = Path(config_file).expanduser().resolve()
    cfg = config_mod.load(config_file, overrides)
    on = _serving_fleet(fleet, cfg) if fleet is not None else None
    run_dir = new_run_dir(cfg, out)
    RUNNING["dir"] = run_dir
    pinned = [*overrides, *_absolute_overrides(cfg, run_dir)]
    cfg = config_mod.load(config_file, pinned)
    for shift in cfg.data.shifts:  # a synthetic change of the data is said, never silent
        print(f"fedsense: synthetic shift of {describe_shift(shift)} ({NO_SHIFT_HINT})", flush=True)

    if on is not None:
        _on_fleet(on, cfg, config_file, pinned, run_dir, verbose)
    elif cfg.fed.mode == "centralized":
        run = RunDir(run_dir, cfg)
        try:
            summary = run_centralized(cfg, run, on_round=Progress(run_dir, cfg.fed.rounds))
            run.write_summary(summary)
        finally:
            run.close()
    else:
        _simulate(cfg, config_file, pinned, run_dir, verbose)
    return run_dir


def _serving_fleet(directory: str | Path, cfg: Config) -> Fleet:
    """The fleet in ``directory``, once it is known to be able to run ``cfg``."""
    fleet = Fleet.load(directory)
    if "superlink" not in fleet.running():
        raise FleetError(f"the fleet's SuperLink in {fleet.path} is not running; `fedsense fleet up` it")
    if cfg.fed.mode != "federated":
        raise ConfigError(f"fed.mode={cfg.fed.mode!r}: a fleet runs federated experiments only")
    if cfg.fed.min_clients > len(fleet.devices):
        raise ConfigError(
            f"fed.min_clients={cfg.fed.min_clients} but the fleet has {len(fleet.devices)} devices; "
            f"--set fed.min_clients={len(fleet.devices)} or fewer"
        )
    return fleet


def _on_fleet(fleet: Fleet, cfg: Config, config_file: Path, overrides: list[str], run_dir: Path,
              verbose: bool) -> None:
    """One federation on a running fleet: submitted to its SuperLink, waited for to the real final status."""
    (run_dir / "flower").mkdir(parents=True, exist_ok=True)
    print(f"fedsense: {len(fleet.devices)} devices of the fleet in {fleet.path}, {cfg.fed.rounds} rounds, "
          f"method {cfg.adapt.method}; run directory {run_dir}", flush=True)
    launcher.submit_and_wait(
        home=fleet.home,
        config_file=config_file,
        overrides=overrides,
        run_config=run_dir / "flower" / "run-config.toml",
        verbose=verbose,
        on_poll=Progress(run_dir, cfg.fed.rounds),
        finished=(run_dir / "summary.json").exists,  # the ServerApp writes it last, also on failure
        sign=(lambda bundle: fab.sign_app(bundle, fleet.signing_key, fleet.approvals)) if fleet.signing_key else None,
    )


def _simulate(cfg: Config, config_file: Path, overrides: list[str], run_dir: Path, verbose: bool,
              resume_after: int = 0) -> None:
    """One federation through Flower's simulation engine, on a SuperLink of its own."""
    # Build (and cache) the dataset here once, before the simulated clients
    # start, and learn how many clients (subjects) it has.
    print(f"fedsense: preparing {cfg.data.kind} data (windowing is cached after the first run) ...",
          end="", flush=True)
    started = time.time()
    clients = num_clients(cfg)
    print(f" {time.time() - started:.1f}s", flush=True)
    if cfg.fed.min_clients > clients:  # Flower would wait for nodes that never come
        raise ConfigError(f"fed.min_clients={cfg.fed.min_clients}: the data have {clients} clients "
                          f"(one per subject); a round could never start")
    home = private_dir(run_dir) / "flower"
    rounds = f"rounds {resume_after + 1}-{cfg.fed.rounds}" if resume_after else f"{cfg.fed.rounds} rounds"
    print(f"fedsense: {clients} clients, {rounds}, method {cfg.adapt.method}; "
          f"run directory {run_dir}; starting Flower's simulation engine ...", flush=True)
    link = launcher.SuperLink.start(home)
    try:
        launcher.submit_and_wait(
            home=home,
            config_file=config_file,
            overrides=overrides,
            federation_config=launcher.simulation_federation(clients, cfg.fed.num_cpus_per_client, cfg.fed.simulation_cpus),
            verbose=verbose,
            on_poll=Progress(run_dir, cfg.fed.rounds, resume_after),
            finished=(run_dir / "summary.json").exists,  # the ServerApp writes it last, also on failure
            resume=bool(resume_after),
            on_stop=link.halt_server_app,  # nothing the stop does to the devices may be recorded
        )
    finally:
        link.stop()


def resume_experiment(run_dir: str | Path, verbose: bool = False) -> Path:
    """Continue a federated run after its last complete round (its
    ``checkpoints/resume.npz``), with the run's own config.yaml."""
    run_dir = Path(run_dir).expanduser().resolve()
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        raise ConfigError(f"{run_dir}: no config.yaml, not a fedsense run directory")
    cfg = config_mod.load(config_file, [])
    if cfg.fed.mode != "federated":
        raise ConfigError(f"{run_dir}: only federated runs can be resumed (fed.mode is {cfg.fed.mode!r})")
    if Path(cfg.output.dir or "").resolve() != run_dir:
        raise ConfigError(f"{config_file}: output.dir is {cfg.output.dir!r}, not this directory (was it moved?)")
    point = load_resume(run_dir)
    RUNNING["dir"] = run_dir
    if point.server_round >= cfg.fed.rounds:
        raise ConfigError(f"{run_dir}: all {cfg.fed.rounds} rounds are complete; nothing to resume")
    alive = launcher.run_processes(run_dir / "flower")
    if alive:
        raise ConfigError(f"{run_dir}: processes of the interrupted run are still running "
                          f"(pids {' '.join(map(str, alive))}); stop them before resuming")
    earlier = run_dir / "summary.json"
    if earlier.exists():  # a failed attempt's summary: kept, out of the way of the new one
        earlier.rename(run_dir / f"summary.failed-after-round-{point.server_round}.json")
    print(f"fedsense: resuming {run_dir} after round {point.server_round} of {cfg.fed.rounds}", flush=True)
    _simulate(cfg, config_file, [], run_dir, verbose, resume_after=point.server_round)
    return run_dir


def run_seeds(
    config_file: str | Path, overrides: list[str], seeds: list[int], out: str | None, verbose: bool
) -> Path:
    """One run per seed under ``OUT/seed-<s>``, then ``OUT/seeds.json`` with
    mean and standard deviation of the headline numbers."""
    cfg = config_mod.load(Path(config_file).expanduser(), overrides)
    root = resolve_run_dir(cfg, out)
    runs = []
    for seed in seeds:
        print(f"\n== seed {seed} ==", flush=True)
        run_dir = run_experiment(config_file, [*overrides, f"seed={seed}"], str(root / f"seed-{seed}"), verbose)
        runs.append(json.loads((run_dir / "summary.json").read_text()))
    stats = {}
    for key in ("target.macro_f1", "target.accuracy", "source.macro_f1", "source.accuracy", "wall_seconds"):
        if (st := mean_std(runs, key)) is not None:
            stats[key] = {"mean": st[0], "std": st[1], "values": [dotted(r, key) for r in runs]}
    (root / "seeds.json").write_text(json.dumps({"seeds": seeds, "stats": stats}, indent=2) + "\n")
    print(f"\nover seeds {seeds}:")
    for key, st in stats.items():
        print(f"  {key:18s} {st['mean']:.4f} ± {st['std']:.4f}")
    print(f"  written to {root / 'seeds.json'}")
    return root


def convert(config_file: str | Path, overrides: list[str], out: str, per_subject: bool) -> list[Path]:
    """Write the configured dataset (after modality selection and shifts) in
    the npz format of docs/design.md: one file, or one file per subject in a folder."""
    cfg = config_mod.load(Path(config_file).expanduser(), overrides)
    ds = build_dataset(cfg.data, cfg.seed)
    target = Path(out).expanduser()
    if not per_subject:
        return [save_npz(ds, target)]
    return [save_npz(ds.subset(ds.subject == s), target / f"subject-{s}.npz") for s in ds.subjects()]
