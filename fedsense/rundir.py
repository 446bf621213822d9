"""The run directory contract (docs/design.md): config.yaml, metrics.jsonl,
summary.json, tb/ and checkpoints/.

Files are written atomically (temp file + rename) so a crash never leaves a
half-written summary or checkpoint behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedsense.board import final_metrics, hparams_of, layout, point_sprites, scalar_tags
from fedsense.config import Config, ConfigError, to_dict
from fedsense.configfile import dump
from fedsense.fileio import atomic_write, atomic_write_bytes, private_dir


def resolve_run_dir(cfg: Config, out: str | Path | None = None) -> Path:
    """Absolute run directory: ``out``, else ``output.dir``, else
    ``runs/<name>-<time>`` under the working directory (name defaults to
    ``<kind>-<method>-<mode>``)."""
    if out:
        return Path(out).expanduser().resolve()
    if cfg.output.dir:
        return Path(cfg.output.dir).expanduser().resolve()
    name = cfg.output.name or f"{cfg.data.kind}-{cfg.adapt.method}-{cfg.fed.mode}"
    return Path("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()


def new_run_dir(cfg: Config, out: str | Path | None = None) -> Path:
    """:func:`resolve_run_dir`, refusing one that already holds a run: runs are never overwritten."""
    run_dir = resolve_run_dir(cfg, out)
    if (run_dir / "summary.json").exists() or (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"{run_dir} already holds a run; choose another --out (or remove it)")
    return run_dir


def checkpoint_due(cfg: Config, server_round: int) -> bool:
    """Every ``fed.checkpoint_every`` rounds, and always after the last one."""
    return server_round % cfg.fed.checkpoint_every == 0 or server_round == cfg.fed.rounds


class RunDir:
    """One run's output directory; owns its TensorBoard writer.

    ``resume_after=R`` reopens a run directory to continue after round R:
    metrics.jsonl keeps its first R rounds only, and TensorBoard is told to
    drop whatever the interrupted run logged for later rounds (``purge_step``).
    """

    def __init__(self, path: str | Path, cfg: Config, resume_after: int | None = None) -> None:
        self.path = private_dir(Path(path).expanduser().resolve())
        (self.path / "checkpoints").mkdir(exist_ok=True)
        self.metrics_path = self.path / "metrics.jsonl"
        if resume_after is None:
            atomic_write_bytes(self.path / "config.yaml", dump(cfg).encode())
            self.metrics_path.write_text("")
        else:
            earlier = read_metrics(self.path) if self.metrics_path.exists() else []
            kept = [json.dumps(r) + "\n" for r in earlier if int(r["round"]) <= resume_after]
            atomic_write_bytes(self.metrics_path, "".join(kept).encode())
        self.started = time.time()
        from torch.utils.tensorboard import SummaryWriter  # heavy: only where a run is written

        self.cfg = cfg
        if resume_after is None:
            self.writer = SummaryWriter(log_dir=str(self.tb_dir))
            self.writer.add_text("config", "```\n" + dump(cfg) + "\n```", 0)
            self.writer.add_custom_scalars(layout())
        else:
            self.writer = SummaryWriter(log_dir=str(self.tb_dir), purge_step=resume_after + 1)
        self.writer.flush()

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    def log_round(self, server_round: int, record: Mapping[str, Any]) -> None:
        """Append one line to metrics.jsonl and the same numbers to TensorBoard
        (tags: :func:`fedsense.board.scalar_tags`)."""
        line = {"round": server_round, **record}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        for tag, value in scalar_tags(record).items():
            self.writer.add_scalar(tag, value, server_round)
        self.writer.flush()

    def log_image(self, tag: str, image: np.ndarray, server_round: int) -> None:
        """A ``(3, H, W)`` uint8 image, e.g. :func:`fedsense.board.confusion_image`."""
        self.writer.add_image(tag, image, server_round, dataformats="CHW")
        self.writer.flush()

    def log_text(self, tag: str, text: str, server_round: int) -> None:
        self.writer.add_text(tag, text, server_round)
        self.writer.flush()

    def log_embedding(
        self, tag: str, points: np.ndarray, labels: list[list[str]], header: list[str], server_round: int
    ) -> None:
        """Points for TensorBoard's projector, one metadata row per point,
        drawn as :func:`fedsense.board.point_sprites` (colour: class; filled:
        source, open: target)."""
        if len(points):
            import torch  # loaded already with the writer (torch.utils.tensorboard); its sprites want a tensor

            sprites = torch.from_numpy(point_sprites(labels, header.index("class"), header.index("role")))
            self.writer.add_embedding(points, metadata=labels, metadata_header=header, tag=tag,
                                      global_step=server_round, label_img=sprites)
            self.writer.flush()

    def log_histograms(self, server_round: int, arrays: Mapping[str, np.ndarray]) -> None:
        """One histogram per array, tagged ``weights/<parameter name>``."""
        for name, value in arrays.items():
            if np.issubdtype(np.asarray(value).dtype, np.floating) and np.size(value):
                self.writer.add_histogram(f"weights/{name}", np.asarray(value), server_round)
        self.writer.flush()

    def save_checkpoint(self, server_round: int, arrays: Mapping[str, np.ndarray]) -> Path:
        """Global shared arrays after ``server_round``; ``latest.npz`` points at the newest."""
        path = self.path / "checkpoints" / f"round-{server_round:04d}.npz"
        atomic_write(path, lambda f: np.savez(f, **arrays))
        atomic_write(self.path / "checkpoints" / "latest.npz", lambda f: np.savez(f, **arrays))
        return path

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """summary.json, and the run's row in TensorBoard's HParams tab: every
        config value against the final target and source macro-F1."""
        full = {**summary, "wall_seconds": round(time.time() - self.started, 3)}
        path = self.path / "summary.json"
        atomic_write_bytes(path, (json.dumps(full, indent=2) + "\n").encode())
        from torch.utils.tensorboard.summary import hparams

        metrics = final_metrics(full)
        writer = self.writer._get_file_writer()  # the run's own event file, not a sub-run
        for event in hparams(hparams_of({**to_dict(self.cfg), "status": full.get("status", "")}), metrics):
            writer.add_summary(event)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, int(full.get("rounds") or 0))
        self.writer.flush()
        return path

    def close(self) -> None:
        self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rounds of a run's metrics.jsonl (a last line cut short by a kill is left out)."""
    lines = [line for line in Path(path, "metrics.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return out


def device_compute(history: list[Mapping[str, Any]]) -> dict[str, float | None]:
    """Per role, a device's mean CPU seconds per round (train plus evaluate
    message), over the rounds that report them."""
    out: dict[str, float | None] = {}
    for role in ("source", "target"):
        per_round = [sum(float(((rec.get("compute") or {}).get(kind) or {}).get(role, {}).get("cpu_seconds", 0.0))
                         for kind in ("train", "evaluate"))
                     for rec in history if rec.get("compute")]
        out[f"{role}_cpu_seconds_per_round"] = float(sum(per_round) / len(per_round)) if per_round else None
    return out


def build_summary(
    cfg: Config, history: list[Mapping[str, Any]], comm: Mapping[str, int], **extra: Any
) -> dict[str, Any]:
    """summary.json content: the last round's metrics plus totals (docs/design.md keys).

    ``target``/``source`` hold ``macro_f1`` and ``accuracy`` (``null`` when a run
    has no client of that role or failed before its first round).
    """
    last = history[-1] if history else {}
    pick = lambda role: {k: (last.get(role) or {}).get(k) for k in ("macro_f1", "accuracy")}  # noqa: E731
    return {
        "compute": device_compute(history),
        "method": cfg.adapt.method,
        "mode": cfg.fed.mode,
        "rounds": len(history),
        "seed": cfg.seed,
        "target": pick("target"),
        "source": pick("source"),
        "comm": {"bytes_up": int(comm.get("bytes_up", 0)), "bytes_down": int(comm.get("bytes_down", 0)),
                 # of bytes_up, the train replies: model updates as encoded (fed.update_encoding)
                 "bytes_up_train": int(comm.get("bytes_up_train", 0))},
        **extra,
    }
