"""``fedsense`` command line: run experiments and find their results.

    fedsense run CONFIG.yaml [--set key=value ...] [--out DIR] [--verbose]
    fedsense run --resume RUN_DIR [--verbose]
    fedsense plot RUN_DIR... [--out DIR]
    fedsense compare RUN_DIR...
    fedsense fleet up --devices N --data DATA.npz --dir DIR [--tls] [--auth]
    fedsense fleet run DIR CONFIG.yaml [--set key=value ...] [--out RUN_DIR]
    fedsense fleet start DIR DEVICE | status DIR | down DIR
    fedsense fleet certs --out DIR --host NAME [--host NAME ...]

A federated run goes through Flower's simulation engine (one virtual
SuperNode per client); ``fed.mode: centralized`` trains the pooled source
data in this process instead. Either way the run directory of docs/design.md is
written and its path printed. ``fedsense fleet`` runs the same apps on real
SuperLink and SuperNode processes (Flower's deployment engine) on this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

from fedsense import configfile as config_mod
from fedsense.config import Config, ConfigError
from fedsense.data.base import DatasetError
from fedsense.fileio import private_dir
from fedsense.report import dotted, mean_std
from fedsense.rundir import new_run_dir, resolve_run_dir

log = logging.getLogger("fedsense")


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


class _Progress:
    """Prints each new line of a run's metrics.jsonl as a one-line round report
    (rounds up to ``done``, completed before a resume, are not repeated)."""

    def __init__(self, run_dir: Path, rounds: int, done: int = 0) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.rounds = rounds
        self.done = done
        self.seen = 0
        self.started = time.time()

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
            elapsed = time.time() - self.started
            eta = elapsed / (r - self.done) * (self.rounds - r)
            fmt = lambda role: (  # noqa: E731
                f"{rec[role]['macro_f1']:.4f}" if role in rec else "  -   "
            )
            print(
                f"round {r:>3}/{self.rounds}  {rec.get('seconds', 0):6.1f}s  "
                f"target macro-F1 {fmt('target')}  source macro-F1 {fmt('source')}  "
                f"ETA {eta:5.0f}s{_replied(rec)}",
                flush=True,
            )


_RUNNING: dict[str, Path] = {}  # the run directory of the federation under way (for the stop message)


def _failure_reason(err: Exception) -> str:
    """The first line of why a run failed (from its summary.json when the
    ServerApp wrote one), and where the whole story is."""
    where = _RUNNING.get("dir")
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
) -> Path:
    """Run one experiment end to end; returns its run directory.

    Raises ConfigError/DatasetError for bad input and launcher.RunFailed when
    the Flower run does not complete.
    """
    config_file = Path(config_file).expanduser().resolve()
    cfg = config_mod.load(config_file, overrides)
    run_dir = new_run_dir(cfg, out)
    _RUNNING["dir"] = run_dir
    pinned = [*overrides, *_absolute_overrides(cfg, run_dir)]
    cfg = config_mod.load(config_file, pinned)

    if cfg.fed.mode == "centralized":
        from fedsense.centralized import run_centralized
        from fedsense.rundir import RunDir

        run = RunDir(run_dir, cfg)
        try:
            summary = run_centralized(cfg, run, on_round=_Progress(run_dir, cfg.fed.rounds))
            run.write_summary(summary)
        finally:
            run.close()
        return run_dir

    _simulate(cfg, config_file, pinned, run_dir, verbose)
    return run_dir


def _simulate(cfg: Config, config_file: Path, overrides: list[str], run_dir: Path, verbose: bool,
              resume_after: int = 0) -> None:
    """One federation through Flower's simulation engine, on a SuperLink of its own."""
    from fedsense.data.clients import num_clients
    from fl_server import launcher

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
            on_poll=_Progress(run_dir, cfg.fed.rounds, resume_after),
            finished=(run_dir / "summary.json").exists,  # the ServerApp writes it last, also on failure
            resume=bool(resume_after),
        )
    finally:
        link.stop()


def resume_experiment(run_dir: str | Path, verbose: bool = False) -> Path:
    """Continue a federated run after its last complete round (its
    ``checkpoints/resume.npz``), with the run's own config.yaml."""
    from fedsense.checkpoint import load_resume
    from fl_server.processes import processes_with_env

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
    _RUNNING["dir"] = run_dir
    if point.server_round >= cfg.fed.rounds:
        raise ConfigError(f"{run_dir}: all {cfg.fed.rounds} rounds are complete; nothing to resume")
    home = str(run_dir / "flower")
    alive = sorted(pid for pid, value in processes_with_env("FLWR_HOME").items() if value == home)
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
    from fedsense.data.loaders import build_dataset
    from fedsense.data.npz import save_npz

    cfg = config_mod.load(Path(config_file).expanduser(), overrides)
    ds = build_dataset(cfg.data, cfg.seed)
    target = Path(out).expanduser()
    if not per_subject:
        return [save_npz(ds, target)]
    return [save_npz(ds.subset(ds.subject == s), target / f"subject-{s}.npz") for s in ds.subjects()]


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected integers like 0,1,2") from None


def _report(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    t, s = summary["target"], summary["source"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(
        f"\ndone in {summary['wall_seconds']:.0f}s: target macro-F1 {fmt(t['macro_f1'])} "
        f"(accuracy {fmt(t['accuracy'])}), source macro-F1 {fmt(s['macro_f1'])}\n"
        f"  summary:     {run_dir / 'summary.json'}\n"
        f"  metrics:     {run_dir / 'metrics.jsonl'}\n"
        f"  TensorBoard: tensorboard --logdir {run_dir / 'tb'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedsense", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"fedsense {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run one experiment (simulated federation or centralized)")
    run_p.add_argument("config", nargs="?", help="experiment YAML, e.g. configs/default.yaml")
    run_p.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted federated run after its last complete round")
    run_p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (value parsed as YAML); repeatable")
    run_p.add_argument("--out", help="run directory (default: runs/<name>-<time>)")
    run_p.add_argument("--verbose", action="store_true", help="stream Flower's and Ray's logs")
    run_p.add_argument("--seeds", help="comma-separated seeds: one run each under OUT/seed-<s>, "
                       "plus OUT/seeds.json with mean ± std")
    conv_p = sub.add_parser("convert", help="write the configured dataset as docs/design.md npz file(s)")
    conv_p.add_argument("config", help="experiment YAML whose data section is converted")
    conv_p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    conv_p.add_argument("--out", required=True, help="output .npz file (or folder with --per-subject)")
    conv_p.add_argument("--per-subject", action="store_true",
                        help="one file per subject (a device's data for a real SuperNode)")
    plot_p = sub.add_parser("plot", help="PNG learning curves of one or more run directories")
    plot_p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    plot_p.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots for one run, ./plots for several)")
    cmp_p = sub.add_parser("compare", help="a Markdown table of run directories' summaries")
    cmp_p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    res_p = sub.add_parser("results", help="run every experiment arm over seeds; write docs/results.md")
    res_p.add_argument("--scenarios", default="cross_device,mirror,rotation_x,sensor,cross_user")
    res_p.add_argument("--arms", help="comma-separated arm names (default: all)")
    res_p.add_argument("--seeds", default="0,1,2")
    res_p.add_argument("--out", default="runs/results", help="where the runs go")
    res_p.add_argument("--doc", default="docs/results.md", help="the Markdown file written")
    res_p.add_argument("--reuse", action="store_true", help="keep runs already completed under --out")
    res_p.add_argument("--no-run", action="store_true",
                       help="start nothing: write the page from the runs completed so far")
    exp_p = sub.add_parser("export", help="write a run's inference model (no discriminators) for devices")
    exp_p.add_argument("run", metavar="RUN_DIR")
    exp_p.add_argument("--format", choices=["onnx"], default="onnx")
    exp_p.add_argument("--int8", action="store_true",
                       help="static int8 quantization (per-channel weights, calibrated activations)")
    exp_p.add_argument("--out", help="the file written (default: RUN_DIR/export/model[-device-N][-int8].onnx)")
    exp_p.add_argument("--device", type=int, help="the device whose model to export (needed when devices keep "
                       "BatchNorm statistics of their own, as FedBN and M3BAT-BN do)")
    exp_p.add_argument("--evaluate", action="store_true",
                       help="also export every device's model and report target/source macro-F1 and parity "
                       "with PyTorch, as the federation evaluates (onnxruntime, CPU)")
    _fleet_parser(sub)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so `finally` blocks stop the SuperLink we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(name)s %(levelname)s %(message)s")

    from fl_server.fleet import FleetError
    from fl_server.launcher import RunFailed

    commands = {
        "compare": _cmd_compare, "convert": _cmd_convert, "plot": _cmd_plot, "results": _cmd_results, "run": _cmd_run,
        "fleet": _cmd_fleet, "export": _cmd_export,
    }
    try:
        return commands[args.command](args)
    except (ConfigError, DatasetError, FileNotFoundError) as err:
        print(f"\nfedsense: error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"\nfedsense: run failed: {_failure_reason(err)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as stop:
        if isinstance(stop, SystemExit) and stop.code not in (130, 143):
            raise
        where = _RUNNING.get("dir")
        hint = f"; continue it with: fedsense run --resume {where}" if where and (where / "checkpoints" /
                                                                                 "resume.npz").exists() else ""
        print(f"\nfedsense: stopped{hint}", file=sys.stderr)
        return 130 if isinstance(stop, KeyboardInterrupt) else 143
    except FleetError as err:
        print(f"fedsense: fleet: {err}", file=sys.stderr)
        return 1


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedsense")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
        return "unknown (not installed)"


def run_labels(paths: list[str]) -> dict[str, Path]:
    """Short unique labels for run directories: the folder name, or as many
    trailing path parts as it takes (``m3bat/seed-0`` beside ``dann/seed-0``)."""
    dirs = [Path(p).expanduser().resolve() for p in paths]
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: not a run directory")
    for depth in range(1, max(len(d.parts) for d in dirs) + 1):
        labels = ["/".join(d.parts[-depth:]) for d in dirs]
        if len(set(labels)) == len(labels):
            return dict(zip(labels, dirs))
    raise ConfigError("the same run directory is given twice")


def _cmd_export(args: argparse.Namespace) -> int:
    import tempfile

    from fedsense.deploy import RunModels
    from fedsense.onnx_export import MissingExtra, evaluate_exports, export_device, parity

    runs = RunModels.open(args.run)
    suffix = ("" if args.device is None else f"-device-{args.device}") + ("-int8" if args.int8 else "")
    out = Path(args.out) if args.out else runs.path / "export" / f"model{suffix}.onnx"
    try:
        path, model, data = export_device(runs, args.device, out, args.int8)
        report: dict[str, object] = {"file": str(path), "bytes": path.stat().st_size,
                                  "format": "int8" if args.int8 else "float32", "device": args.device,
                                  "parity": parity(model, path, data)}
        print(f"wrote {path} ({report['bytes']:,} bytes, {report['format']}); on device "
              f"{data.partition_id}'s {report['parity']['windows']} held-out windows: largest logit difference "
              f"from PyTorch {report['parity']['max_abs_logit_diff']:.2e}, same class "
              f"{100 * report['parity']['same_class']:.2f} %")
        if args.evaluate:
            with tempfile.TemporaryDirectory() as tmp:
                report["evaluation"] = evaluate_exports(runs, args.int8, tmp)
            for name, roles in report["evaluation"]["scores"].items():
                line = ", ".join(f"{role} macro-F1 {v['macro_f1']:.4f}" for role, v in sorted(roles.items(), reverse=True))
                print(f"  {name:8s} {line}")
            ev = report["evaluation"]
            print(f"  every device's export against PyTorch: same class on {100 * ev['same_class']:.2f} % of "
                  f"{ev['windows']} windows, largest logit difference {ev['max_abs_logit_diff']:.2e}")
    except MissingExtra as err:
        print(f"fedsense: error: {err}", file=sys.stderr)
        return 2
    path.with_name(path.name + ".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from fedsense.plots import learning_curves
    from fedsense.rundir import read_metrics

    runs = run_labels(args.runs)
    out = Path(args.out) if args.out else (next(iter(runs.values())) / "plots" if len(runs) == 1 else Path("plots"))
    for label, d in runs.items():
        if not (d / "metrics.jsonl").is_file():
            raise FileNotFoundError(f"{d}: no metrics.jsonl (is this a fedsense run directory?)")
    records = {label: read_metrics(d) for label, d in runs.items()}
    empty = [f"{runs[label]}{_failed_because(runs[label])}" for label, r in records.items() if not r]
    if empty:
        raise ConfigError("nothing to plot: no round completed in " + "; ".join(empty))
    paths = learning_curves(records, out)
    for path in paths:
        print(f"wrote {path.resolve()}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from fedsense.report import runs_table

    summaries = {}
    for label, d in run_labels(args.runs).items():
        if not (d / "summary.json").is_file():
            raise FileNotFoundError(f"{d}: no summary.json (is this a fedsense run directory?)")
        summaries[label] = json.loads((d / "summary.json").read_text())
    print(runs_table(summaries))
    failed = {label: s.get("error") for label, s in summaries.items() if s.get("status") != "completed"}
    for label, error in failed.items():
        print(f"- {label}: {summaries[label].get('status', 'unknown')}"
              f"{': ' + str(error).splitlines()[0] if error else ''}")
    return 1 if failed else 0


def _failed_because(run_dir: Path) -> str:
    """`` (failed: <reason>)`` from a run's summary.json, or nothing."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return ""
    error = summary.get("error")
    return f" (failed: {str(error).splitlines()[0]})" if summary.get("status") == "failed" and error else ""


def _cmd_convert(args: argparse.Namespace) -> int:
    paths = convert(args.config, args.overrides, args.out, args.per_subject)
    print(f"wrote {len(paths)} file(s): {paths[0]}{' ...' if len(paths) > 1 else ''}")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from fl_server.results import regenerate

    doc = regenerate(
        [x for x in args.scenarios.split(",") if x],
        args.arms.split(",") if args.arms else None,
        _int_list(args.seeds, "--seeds"),
        Path(args.out).resolve(),
        Path(args.doc),
        args.reuse,
        run=not args.no_run,
    )
    print(f"wrote {doc}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    if args.resume:
        if args.config or args.overrides or args.out or args.seeds:
            raise ConfigError("--resume RUN_DIR takes the run's own config.yaml: "
                              "no CONFIG, --set, --out or --seeds with it")
        _report(resume_experiment(args.resume, args.verbose))
        return 0
    if not args.config:
        raise ConfigError("fedsense run: give an experiment CONFIG.yaml (or --resume RUN_DIR)")
    if args.seeds:
        run_seeds(args.config, args.overrides, _int_list(args.seeds, "--seeds"), args.out, args.verbose)
        return 0
    _report(run_experiment(args.config, args.overrides, args.out, args.verbose))
    return 0


def _fleet_parser(sub) -> None:
    fleet_p = sub.add_parser("fleet", help="a local fleet of real SuperLink/SuperNode processes")
    fsub = fleet_p.add_subparsers(dest="fleet_command", required=True)
    up = fsub.add_parser("up", help="split data per device, make certificates/keys, start SuperLink + SuperNodes")
    up.add_argument("--data", required=True, help="docs/design.md npz with several subjects (e.g. from `fedsense convert`)")
    up.add_argument("--dir", required=True, help="the fleet's folder (state, device files, certificates, logs)")
    up.add_argument("--devices", type=int, help="one device per subject: the first N subjects")
    up.add_argument("--subjects", help="comma-separated subjects, one device each (instead of --devices)")
    up.add_argument("--tls", action="store_true", help="TLS with a generated CA (server certificate for 127.0.0.1)")
    up.add_argument("--auth", action="store_true", help="SuperNode authentication with registered keys (needs --tls)")
    run = fsub.add_parser("run", help="run an experiment on the fleet and wait for its final status")
    run.add_argument("dir", metavar="DIR")
    run.add_argument("config", help="experiment YAML")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--out", help="run directory (default: runs/<name>-<time>)")
    run.add_argument("--verbose", action="store_true", help="stream the run's log")
    start = fsub.add_parser("start", help="(re)start one device's SuperNode, retrying while the SuperLink refuses it")
    start.add_argument("dir", metavar="DIR")
    start.add_argument("device", help="e.g. device-0")
    start.add_argument("--wait", type=float, default=180.0, help="seconds to keep retrying (default 180)")
    status = fsub.add_parser("status", help="which of the fleet's processes run; the SuperLink's nodes")
    status.add_argument("dir", metavar="DIR")
    down = fsub.add_parser("down", help="stop exactly the processes `fleet up` and `fleet start` started")
    down.add_argument("dir", metavar="DIR")
    certs = fsub.add_parser("certs", help="a CA and a SuperLink certificate for a real fleet")
    certs.add_argument("--out", required=True, help="folder for ca.crt, ca.key, server.pem, server.key")
    certs.add_argument("--host", dest="hosts", action="append", required=True,
                       help="a host name or IP address the devices dial; repeatable")


def _cmd_fleet(args: argparse.Namespace) -> int:
    from fl_server import fleet

    if args.fleet_command == "up":
        subjects = _int_list(args.subjects, "--subjects") if args.subjects else None
        if (args.devices is None) == (subjects is None):
            raise ConfigError("give exactly one of --devices N and --subjects S1,S2,...")
        f = fleet.up(args.dir, args.data, args.devices, subjects, tls=args.tls, auth=args.auth)
        security = ("TLS + SuperNode authentication" if f.auth else "TLS") if f.tls else "insecure (no TLS)"
        print(f"fleet up in {f.path}: SuperLink {f.address} ({security}), {len(f.devices)} SuperNodes online")
        for d in f.devices:
            node = f", node {d.node_id}" if d.node_id is not None else ""
            print(f"  {d.name}: subject {d.subject}, pid {d.process[0]}{node}, data {d.data}")
        print(f"run an experiment:  fedsense fleet run {f.path} configs/default.yaml --set fed.rounds=2\n"
              f"stop everything:    fedsense fleet down {f.path}")
    elif args.fleet_command == "run":
        run_dir = fleet.run(args.dir, args.config, args.overrides, args.out, _Progress, args.verbose)
        _report(run_dir)
    elif args.fleet_command == "start":
        f = fleet.Fleet.load(args.dir)
        d = fleet.start_device(f, args.device, wait=args.wait)
        print(f"{d.name} online as node {d.node_id} (pid {d.process[0]})")
    elif args.fleet_command == "status":
        f = fleet.Fleet.load(args.dir)
        running = f.running()
        print(f"fleet {f.path}: SuperLink {f.address} {'running' if 'superlink' in running else 'stopped'}")
        for d in f.devices:
            print(f"  {d.name}: {'running' if d.name in running else 'stopped'}")
        if "superlink" in running:
            for n in fleet.nodes(f):
                print(f"  node {n['node-id']}: {n['status']}")
    elif args.fleet_command == "certs":
        from fl_server.pki import make_server_pki

        pki = make_server_pki(Path(args.out).expanduser(), tuple(args.hosts))
        print(f"SuperLink: --ssl-ca-certfile {pki.ca_cert} --ssl-certfile {pki.cert} --ssl-keyfile {pki.key}\n"
              f"devices:   --root-certificates ca.crt (copy {pki.ca_cert}; keep {pki.ca_key} private)")
    else:
        stopped = fleet.down(args.dir)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
