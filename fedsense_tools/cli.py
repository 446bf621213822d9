"""``fedsense`` command line: run experiments and find their results.

    fedsense run CONFIG.yaml [--set key=value ...] [--out DIR] [--verbose]
    fedsense run --resume RUN_DIR [--verbose]
    fedsense plot RUN_DIR... [--out DIR]
    fedsense compare RUN_DIR...
    fedsense board RUN_DIR... [--port PORT]
    fedsense fleet up --devices N --data DATA.npz --dir DIR [--tls] [--auth]
    fedsense fleet run DIR CONFIG.yaml [--set key=value ...] [--out RUN_DIR]
    fedsense fleet start DIR DEVICE | status DIR | down DIR
    fedsense fleet certs --out DIR --host NAME [--host NAME ...] [--front-port P] [--link-port P]
    fedsense fleet sign --key KEY --approvals DIR [--app APP_DIR]

A federated run goes through Flower's simulation engine (one virtual
SuperNode per client); ``fed.mode: centralized`` trains the pooled source
data in this process instead. Either way the run directory of docs/design.md is
written and its path printed. ``fedsense fleet`` runs the same apps on real
SuperLink and SuperNode processes (Flower's deployment engine) on this machine.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version

def build_parser() -> argparse.ArgumentParser:
    """Every command, argument and option of ``fedsense``, each with its help."""
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
    conv_p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key before converting (e.g. data.shifts=[]); repeatable")
    conv_p.add_argument("--out", required=True, help="output .npz file (or folder with --per-subject)")
    conv_p.add_argument("--per-subject", action="store_true",
                        help="one file per subject (a device's data for a real SuperNode)")
    plot_p = sub.add_parser("plot", help="PNG learning curves of one or more run directories")
    plot_p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (each with metrics.jsonl)")
    plot_p.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots for one run, ./plots for several)")
    cmp_p = sub.add_parser("compare", help="a Markdown table of run directories' summaries")
    cmp_p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (each with summary.json)")
    board_p = sub.add_parser("board", help="open TensorBoard on run directories, each run named by its folder")
    board_p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (each with tb/)")
    board_p.add_argument("--port", type=int, default=6006, help="port on 127.0.0.1 (default 6006)")
    res_p = sub.add_parser("results", help="run every experiment arm over seeds; write docs/results.md")
    res_p.add_argument("--scenarios", default="cross_device,mirror,rotation_x,sensor,cross_user",
                       help="comma-separated folders of configs/experiments/ (default: all five)")
    res_p.add_argument("--arms", help="comma-separated arm names (default: all)")
    res_p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run each (default 0,1,2)")
    res_p.add_argument("--out", default="runs/results", help="where the runs go")
    res_p.add_argument("--doc", default="docs/results.md", help="the Markdown file written")
    res_p.add_argument("--reuse", action="store_true", help="keep runs already completed under --out")
    res_p.add_argument("--no-run", action="store_true",
                       help="start nothing: write the page from the runs completed so far")
    rep_p = sub.add_parser("replay", help="re-run a finished run's unlabeled devices with other adapt.* options "
                           "on its checkpoints (no Flower, nothing shared retrained)")
    rep_p.add_argument("run", metavar="RUN_DIR", help="a completed run of none, adabn or m3bat_local")
    rep_p.add_argument("--set", dest="overrides", action="append", default=[], metavar="adapt.KEY=VALUE",
                       help="an adaptation option to change (value parsed as YAML); repeatable")
    rep_p.add_argument("--out", help="JSON written (default: RUN_DIR/replays/<options>.json)")
    exp_p = sub.add_parser("export", help="write a run's inference model (no discriminators) for devices")
    exp_p.add_argument("run", metavar="RUN_DIR", help="a completed run directory (its checkpoints)")
    exp_p.add_argument("--format", choices=["onnx"], default="onnx", help="the file format (ONNX)")
    exp_p.add_argument("--int8", action="store_true",
                       help="static int8 quantization (per-channel weights, calibrated activations)")
    exp_p.add_argument("--out", help="the file written (default: RUN_DIR/export/model[-device-N][-int8].onnx)")
    exp_p.add_argument("--device", type=int, help="the device whose model to export (needed when devices keep "
                       "BatchNorm statistics of their own, as FedBN and M3BAT-BN do)")
    exp_p.add_argument("--evaluate", action="store_true",
                       help="also export every device's model and report target/source macro-F1 and parity "
                       "with PyTorch, as the federation evaluates (onnxruntime, CPU)")
    _fleet_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so `finally` blocks stop the SuperLink we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(name)s %(levelname)s %(message)s")
    # Imported once the arguments are parsed: the commands import torch and
    # matplotlib (`fedsense --version` 0.65 s this way, 4-5 s with them imported first).
    from fedsense_tools import commands

    return commands.dispatch(args)


def _version() -> str:
    try:
        return version("fedsense")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
        return "unknown (not installed)"


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
    run.add_argument("dir", metavar="DIR", help="the fleet's folder (of `fleet up`)")
    run.add_argument("config", help="experiment YAML")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key (value parsed as YAML); repeatable")
    run.add_argument("--out", help="run directory (default: runs/<name>-<time>)")
    run.add_argument("--verbose", action="store_true", help="stream the run's log")
    start = fsub.add_parser("start", help="(re)start one device's SuperNode, retrying while the SuperLink refuses it")
    start.add_argument("dir", metavar="DIR", help="the fleet's folder")
    start.add_argument("device", help="e.g. device-0")
    start.add_argument("--wait", type=float, default=180.0, help="seconds to keep retrying (default 180)")
    status = fsub.add_parser("status", help="which of the fleet's processes run; the SuperLink's nodes")
    status.add_argument("dir", metavar="DIR", help="the fleet's folder")
    down = fsub.add_parser("down", help="stop exactly the processes `fleet up` and `fleet start` started")
    down.add_argument("dir", metavar="DIR", help="the fleet's folder")
    certs = fsub.add_parser("certs", help="a CA, a SuperLink certificate, the TLS front's nginx.conf and the "
                            "app-signing key for a real fleet")
    certs.add_argument("--out", required=True, help="folder for ca.crt, ca.key, server.pem, server.key, "
                       "front/nginx.conf, app-signing, trusted-entities.yaml")
    certs.add_argument("--host", dest="hosts", action="append", required=True,
                       help="a host name or IP address the devices dial; repeatable")
    certs.add_argument("--front-port", type=int, default=9092,
                       help="the port the devices dial: the TLS front on every interface (default 9092)")
    certs.add_argument("--link-port", type=int, default=9093,
                       help="the SuperLink's port on 127.0.0.1 behind the front (default 9093)")
    sign = fsub.add_parser("sign", help="sign the app the next `flwr run` sends, so devices with the operator's "
                           "trusted-entities.yaml run it (docs/fleet.md)")
    sign.add_argument("--key", required=True, help="the operator's app-signing key (of `fleet certs`)")
    sign.add_argument("--approvals", required=True, help="the folder the SuperLink serves signatures from")
    sign.add_argument("--app", default=None, help="the Flower app's folder (default: this fedsense)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
