"""What each ``fedsense`` command does, once the command line is parsed
(:mod:`fedsense_tools.cli`). Importing this module imports torch and
matplotlib; the parser does not, so ``fedsense --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedsense.config import ConfigError
from fedsense.data.base import DatasetError
from fedsense.deploy import RunModels
from fedsense.onnx_export import MissingExtra, evaluate_exports, export_device, parity
from fedsense.plots import learning_curves
from fedsense.report import runs_table
from fedsense.rundir import read_metrics
from fedsense_tools import fab, fleet, launcher
from fedsense_tools.experiment import (
    RUNNING,
    convert,
    failure_reason,
    resume_experiment,
    run_experiment,
    run_seeds,
)
from fedsense_tools.fleetstate import Fleet, FleetError
from fedsense_tools.supernodes import nodes, start_device
from fedsense_tools.launcher import RunFailed
from fedsense_tools.front import front_args, write_front
from fedsense_tools.pki import LOCAL_NAMES, make_server_pki, make_signing_key
from fedsense_tools.results import regenerate


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected integers like 0,1,2") from None


def _report(run_dir: Path, started: float) -> None:
    """The run's headline numbers and where everything is; ``started``: when
    the command began (the total includes data preparation and start-up)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    t, s = summary["target"], summary["source"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(
        f"\ndone in {time.time() - started:.0f}s (the federation {summary['wall_seconds']:.0f}s): "
        f"target macro-F1 {fmt(t['macro_f1'])} "
        f"(accuracy {fmt(t['accuracy'])}), source macro-F1 {fmt(s['macro_f1'])}\n"
        f"  summary:     {run_dir / 'summary.json'}\n"
        f"  metrics:     {run_dir / 'metrics.jsonl'}\n"
        f"  TensorBoard: {_own_bin('fedsense')} board {run_dir}"
    )


def _own_bin(name: str) -> str:
    """``name``'s script beside this Python (the venv's), so the printed
    command works without activating the venv; else the bare name."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def board_view(runs: dict[str, Path], view: Path) -> Path:
    """A folder of links, one per run named by its label, to the runs'
    ``tb/`` folders: TensorBoard names a run by its path below the logdir,
    so each run shows under its label (not "." or "tb")."""
    for label, d in runs.items():
        if not (d / "tb").is_dir():
            raise FileNotFoundError(f"{d}: no tb/ folder (is this a fedsense run directory?)")
        link = view / label
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(d / "tb", target_is_directory=True)
    return view


def _cmd_board(args: argparse.Namespace) -> int:
    runs = run_labels(args.runs)
    with tempfile.TemporaryDirectory(prefix="fedsense-board-") as tmp:
        cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(board_view(runs, Path(tmp))),
               "--host", "127.0.0.1", "--port", str(args.port)]
        print(f"TensorBoard on http://127.0.0.1:{args.port} with {', '.join(runs)} (Ctrl-C stops it)", flush=True)
        return subprocess.call(cmd)


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


def _cmd_replay(args: argparse.Namespace) -> int:
    from fedsense import replay

    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml (is this a fedsense run directory?)")

    def show(row: dict) -> None:
        print(f"round {row['round']:3d}  target macro-F1 {row['target']['macro_f1']:.4f}  "
              f"accuracy {row['target']['accuracy']:.4f}", flush=True)

    rows = replay.replay(run_dir, args.overrides, progress=show)
    out = Path(args.out) if args.out else replay.default_out(run_dir, args.overrides)
    replay.write(rows, run_dir, args.overrides, out)
    print(f"target macro-F1, mean of the last {min(10, len(rows))} rounds: {replay.last_rounds_mean(rows):.4f}")
    print(f"wrote {out}")
    return 0


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
    started = time.time()
    if args.resume:
        if args.config or args.overrides or args.out or args.seeds:
            raise ConfigError("--resume RUN_DIR takes the run's own config.yaml: "
                              "no CONFIG, --set, --out or --seeds with it")
        _report(resume_experiment(args.resume, args.verbose), started)
        return 0
    if not args.config:
        raise ConfigError("fedsense run: give an experiment CONFIG.yaml (or --resume RUN_DIR)")
    if args.seeds:
        run_seeds(args.config, args.overrides, _int_list(args.seeds, "--seeds"), args.out, args.verbose)
        return 0
    _report(run_experiment(args.config, args.overrides, args.out, args.verbose), started)
    return 0


def _cmd_fleet(args: argparse.Namespace) -> int:
    started = time.time()
    if args.fleet_command == "up":
        subjects = _int_list(args.subjects, "--subjects") if args.subjects else None
        if (args.devices is None) == (subjects is None):
            raise ConfigError("give exactly one of --devices N and --subjects S1,S2,...")
        f = fleet.up(args.dir, args.data, args.devices, subjects, tls=args.tls, auth=args.auth)
        security = ("TLS + SuperNode authentication" if f.auth else "TLS") if f.tls else "insecure (no TLS)"
        front = f" behind a TLS front at {f.address} (Fleet API only)" if f.link else ""
        print(f"fleet up in {f.path}: SuperLink {f.operator_address}{front} ({security}), "
              f"{len(f.devices)} SuperNodes online")
        for d in f.devices:
            node = f", node {d.node_id}" if d.node_id is not None else ""
            print(f"  {d.name}: subject {d.subject}, pid {d.process[0]}{node}, data {d.data}")
        print(f"run an experiment:  fedsense fleet run {f.path} configs/default.yaml --set fed.rounds=2\n"
              f"stop everything:    fedsense fleet down {f.path}")
    elif args.fleet_command == "run":
        run_dir = run_experiment(args.config, args.overrides, args.out, args.verbose, fleet=args.dir)
        _report(run_dir, started)
    elif args.fleet_command == "start":
        f = Fleet.load(args.dir)
        d = start_device(f, args.device, wait=args.wait)
        print(f"{d.name} online as node {d.node_id} (pid {d.process[0]})")
    elif args.fleet_command == "status":
        f = Fleet.load(args.dir)
        running = f.running()
        print(f"fleet {f.path}: SuperLink {f.operator_address} {'running' if 'superlink' in running else 'stopped'}")
        if f.link:
            print(f"  TLS front {f.address}: {'running' if 'front' in running else 'stopped'}")
        for d in f.devices:
            print(f"  {d.name}: {'running' if d.name in running else 'stopped'}")
        if "superlink" in running:
            for n in nodes(f):
                print(f"  node {n['node-id']}: {n['status']}")
    elif args.fleet_command == "certs":

        out = Path(args.out).expanduser().resolve()
        # localhost too: the front verifies the SuperLink behind it by that name
        pki = make_server_pki(out, tuple(dict.fromkeys([*args.hosts, *LOCAL_NAMES])))
        signing = make_signing_key(out, fab.KEY_ID)
        conf = write_front(out / "front", f"0.0.0.0:{args.front_port}", args.link_port, pki)
        print(f"SuperLink: {' '.join(fab.superlink_prefix(out / 'approvals'))} --host 127.0.0.1 --port {args.link_port} --ssl-ca-certfile {pki.ca_cert} "
              f"--ssl-certfile {pki.cert} --ssl-keyfile {pki.key} ...\n"
              f"TLS front: nginx {' '.join(front_args(out / 'front'))}   (passes the Fleet API only; {conf})\n"
              f"devices:   --superlink {args.hosts[0]}:{args.front_port} --root-certificates ca.crt "
              f"--trusted-entities trusted-entities.yaml\n"
              f"           (copy {pki.ca_cert} and {signing.trusted}; keep {pki.ca_key} and {signing.private} "
              f"private)\n"
              f"each run:  fedsense fleet sign --key {signing.private} --approvals {out / 'approvals'}, "
              f"then flwr run")
    elif args.fleet_command == "sign":
        app = Path(args.app).expanduser().resolve() if args.app else launcher.APP_DIR
        with fab.staged(app, Path(tempfile.gettempdir())) as bundle:
            digest = fab.sign_app(bundle, Path(args.key).expanduser(), Path(args.approvals).expanduser())
        print(f"signed the app in {app}: FAB sha256 {digest}; devices run it until a file of it changes")
    else:
        stopped = fleet.down(args.dir)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; bad input, a failed run and a stop each end in a clear message and exit code."""
    commands = {
        "compare": _cmd_compare, "convert": _cmd_convert, "plot": _cmd_plot, "results": _cmd_results, "run": _cmd_run,
        "fleet": _cmd_fleet, "export": _cmd_export, "board": _cmd_board, "replay": _cmd_replay,
    }
    try:
        return commands[args.command](args)
    except (ConfigError, DatasetError, FileNotFoundError) as err:
        print(f"\nfedsense: error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"\nfedsense: run failed: {failure_reason(err)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as stop:
        if isinstance(stop, SystemExit) and stop.code not in (130, 143):
            raise
        where = RUNNING.get("dir")
        resumable = where is not None and (where / "checkpoints" / "resume.npz").exists()
        hint = f"; continue it with: {_own_bin('fedsense')} run --resume {where}" if resumable else ""
        print(f"\nfedsense: stopped{hint}", file=sys.stderr)
        return 130 if isinstance(stop, KeyboardInterrupt) else 143
    except FleetError as err:
        print(f"fedsense: fleet: {err}", file=sys.stderr)
        return 1
