"""ClientApp: unpack a Message, call the fedsense core, pack the reply.

Shared weights arrive in the message; device-only parts (BatchNorm statistics
under FedBN, discriminators under the statistics-reference design) live in
``context.state`` between rounds. A target client's labels were removed when
its data were loaded.

Bad input on the device (a missing or malformed data file, a bad node or run
config) is answered with an error reply naming what is wrong, so the server
logs and counts it and the round goes on with the other devices.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, RecordDict

from fedsense import protocol
from fedsense.adaptation import METHODS, needs_statistics
from fedsense.adaptation.statistics import from_wire, privatize, to_wire
from fedsense.adaptation.training import Adversarial, embedding_stats, renormalize, train_adversarial
from fedsense.compression import ENCODINGS, UNCOMPRESSED, encode
from fedsense.config import Config, ConfigError
from fedsense.data.base import DatasetError
from fedsense.data.clients import ClientData, load_client_data
from fedsense.data.missing import conform
from fedsense.devicestate import load_local, save_local
from fedsense.embeddings import class_centroids
from fedsense.engine import evaluate as evaluate_model
from fedsense.engine import train_supervised
from fedsense.faults import fault_of, flip_labels, tamper
from fedsense.generator import describe, norm_keys
from fedsense.models import DataSpec, MultimodalNet, build_run_model
from fedsense.params import Sharing, load_arrays, local_arrays, shared_arrays, shared_keys, sharing_of
from fedsense.privacy import clip_update
from fedsense.runconfig import config_from_run
from flwr.clientapp import ClientApp

LOCAL_STATE = "fedsense-local"  # context.state key of the device-only arrays
RESIDUAL_STATE = "fedsense-residual"  # context.state key of error feedback's rounding residual

app = ClientApp()
log = logging.getLogger("fedsense.client")

Handler = Callable[[Message, Context], Message]


def process_age() -> float | None:
    """Seconds since this process started (Linux), else None."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _device_log() -> logging.Logger:
    """On a real device the ClientApp's output lands in the SuperNode's log: give our lines a home."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("fedsense client %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def refuses_bad_input(handler: Handler) -> Handler:
    """Answer bad input on this device with an error reply instead of a crash:
    one line naming the problem, for the server's log and the operator's.
    On a real device (``data-path`` in its node config) every message also
    logs how long it took and how long its fresh process took to get there."""

    @functools.wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        started, age = time.time(), process_age()
        kind = msg.metadata.message_type
        try:
            reply = handler(msg, context)
        except (ConfigError, DatasetError) as err:
            reason = f"{type(err).__name__}: {err}"
            log.error("fedsense client refused %s: %s", kind, reason)
            return Message(Error(code=protocol.ERROR_BAD_INPUT, reason=reason), reply_to=msg)
        if protocol.NODE_DATA_PATH in context.node_config:
            _device_log().info("%s took %.2fs; process started %.2fs before it", kind, time.time() - started,
                               age if age is not None else float("nan"))
        return reply

    return wrapped


def _arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    # order="C" without np.ascontiguousarray, which turns a 0-d buffer into shape (1,)
    return ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in arrays.items()})


def _state_dir(cfg: Config, data: ClientData, context: Context) -> Path | None:
    """Where this device keeps its device-only parameters between runs: the
    node config's ``state-dir``; for a simulated client, ``devices/<partition>``
    in the run directory; else nowhere (they live for one run only)."""
    given = context.node_config.get(protocol.NODE_STATE_DIR)
    if given is not None:
        path = Path(str(given)).expanduser()
        if not path.is_absolute():
            raise ConfigError(f"node config {protocol.NODE_STATE_DIR}={given!r}: must be an absolute path")
        return path
    if protocol.NODE_NUM_PARTITIONS in context.node_config and cfg.output.dir and data.partition_id >= 0:
        return Path(cfg.output.dir) / "devices" / str(data.partition_id)
    return None


def _keep_local(cfg: Config, data: ClientData, context: Context, msg: Message, model: MultimodalNet,
                sharing: Sharing) -> None:
    """Device-only parameters into ``context.state`` and onto the device's disk."""
    arrays = local_arrays(model, sharing)
    context.state[LOCAL_STATE] = _record(arrays)
    directory = _state_dir(cfg, data, context)
    if directory is not None and arrays:
        server_round = int(msg.content[protocol.CONFIG][protocol.CFG_ROUND])
        save_local(directory, server_round, msg.metadata.message_type, arrays)


def _setup(msg: Message, context: Context) -> tuple[Config, ClientData, Sharing, MultimodalNet]:
    cfg = config_from_run(context.run_config)
    data = load_client_data(cfg, context.node_config)
    sharing = sharing_of(METHODS[cfg.adapt.method], cfg.adapt.alignment)
    config = msg.content[protocol.CONFIG]
    num_classes = int(config[protocol.CFG_NUM_CLASSES])
    spec = DataSpec.from_metrics(dict(config))
    if spec.shapes:  # the federation's inputs: a modality this device lacks is masked
        data = replace(data, train=conform(data.train, spec.shapes), test=conform(data.test, spec.shapes))
    model = build_run_model(DataSpec(shapes=data.train.shapes(), num_classes=num_classes), cfg)
    load_arrays(model, _arrays(msg.content[protocol.ARRAYS]), strict_keys=shared_keys(model, sharing))
    if LOCAL_STATE in context.state:  # device-only parameters from earlier rounds of this run
        load_arrays(model, _arrays(context.state[LOCAL_STATE]), strict_keys=set())
    elif (directory := _state_dir(cfg, data, context)) is not None:  # a resumed run: from the device's disk
        stored = load_local(directory, int(config[protocol.CFG_ROUND]), msg.metadata.message_type)
        if stored is not None:
            load_arrays(model, stored, strict_keys=set())
    return cfg, data, sharing, model


def _labels_usable(cfg: Config, data: ClientData) -> bool:
    return data.role == "source" or cfg.data.target_labels == "visible"


def _identity(data: ClientData) -> dict[str, int]:
    return {protocol.IS_TARGET: int(data.role == "target"), protocol.PARTITION: data.partition_id}


def _adversarial(msg: Message, cfg: Config, model: MultimodalNet) -> Adversarial:
    config = msg.content[protocol.CONFIG]
    weights = {b: float(config.get(protocol.cfg_weight(b), 1.0)) for b in model.discriminators}
    reference = None
    if cfg.adapt.alignment == "statistics":
        counts = dict(config)
        arrays = _arrays(msg.content[protocol.REFERENCE]) if protocol.REFERENCE in msg.content else {}
        reference = from_wire(arrays, counts)
    return Adversarial(
        coeff=float(config.get(protocol.CFG_COEFF, 0.0)),
        weights=weights,
        domain_weight=cfg.adapt.domain_weight,
        reference=reference,
    )


def _fault(cfg: Config, data: ClientData, context: Context) -> str | None:
    """This simulated client's injected fault (``faults:``), if any; a real
    device (no number of partitions) has none."""
    total = context.node_config.get(protocol.NODE_NUM_PARTITIONS)
    if total is None or data.partition_id < 0:
        return None
    return fault_of(cfg.faults, data.partition_id, int(total))  # type: ignore[arg-type]


@app.train()
@refuses_bad_input
def train(msg: Message, context: Context) -> Message:
    started = time.process_time()
    cfg, data, sharing, model = _setup(msg, context)
    config = msg.content[protocol.CONFIG]
    server_round = int(config[protocol.CFG_ROUND])
    method = sharing.method
    kwargs = dict(
        epochs=int(config.get(protocol.CFG_LOCAL_EPOCHS, cfg.train.local_epochs)),
        lr=float(config.get(protocol.CFG_LR, cfg.train.lr)),
        # distinct, reproducible randomness per seed, round and client
        seed=cfg.seed * 1_000_003 + server_round * 1_009 + max(data.partition_id, 0),
    )
    labels_usable = _labels_usable(cfg, data)
    fault = _fault(cfg, data, context)
    if fault == "crash":
        raise RuntimeError(f"injected fault: client {data.partition_id} crashes (faults.crash)")
    if fault == "timeout":
        time.sleep(cfg.fed.timeout + 1.0)  # the server has stopped waiting by then
    if fault == "label_flip":
        num_classes = int(config[protocol.CFG_NUM_CLASSES])
        data = replace(data, train=replace(data.train, y=flip_labels(data.train.y, num_classes)))
    adversarial_metrics: dict[str, float] = {}
    if method.adversarial:
        result = train_adversarial(
            model, data.train, data.domain_labels(), cfg.train, _adversarial(msg, cfg, model), **kwargs
        )
        for b in model.discriminators:  # every reply carries every branch's keys
            adversarial_metrics[protocol.loss_domain_key(b)] = result["loss_domain"].get(b, 0.0)
            adversarial_metrics[protocol.disc_acc_key(b)] = result["disc_acc"].get(b, 0.0)
    elif labels_usable:
        result = train_supervised(model, data.train, cfg.train, **kwargs)
    else:
        # An unlabeled target without an adversarial method: AdaBN-style methods
        # renormalise on its windows (forward passes only); the shared weights
        # are unchanged, so the reply carries no weight in the average.
        if method.local_norm:
            renormalize(model, data.train)
        result = {"loss_task": 0.0, "steps": 0, "num_examples": 0, "task_windows": 0}
    _keep_local(cfg, data, context, msg, model, sharing)
    metrics = MetricRecord(
        {
            protocol.NUM_EXAMPLES: int(result["num_examples"]),
            protocol.TASK_WINDOWS: int(result.get("task_windows", result["num_examples"])),
            protocol.LOSS_TASK: float(result["loss_task"]),
            protocol.TRAIN_STEPS: int(result["steps"]),
            **adversarial_metrics,
            **{protocol.modality_windows_key(m): data.train.windows_with(m) for m in model.modalities},
            protocol.COMPUTE_SECONDS: time.process_time() - started,
            **_identity(data),
        }
    )
    shared = shared_arrays(model, sharing)
    if protocol.CFG_CLIPPING_NORM in config:  # privacy.dp: Flower's client-side fixed clipping
        shared = clip_update(shared, _arrays(msg.content[protocol.ARRAYS]), float(config[protocol.CFG_CLIPPING_NORM]))
    if fault in ("nan", "sign_flip", "scale"):
        shared = tamper(fault, shared, _arrays(msg.content[protocol.ARRAYS]), cfg.faults.scale_factor)
    update = _packed_update(cfg, msg, context, shared, _state_dir(cfg, data, context))
    return Message(RecordDict({**update, protocol.METRICS: metrics}), reply_to=msg)


def _packed_update(cfg: Config, msg: Message, context: Context, shared: dict[str, np.ndarray],
                   directory: Path | None) -> dict[str, ArrayRecord]:
    """The trained arrays as the server asked for them: as they are, or their
    change against the global arrays compressed (``fedsense.compression``),
    this round's rounding error kept for the next round (error feedback) in
    ``context.state`` and on the device's disk (``directory``), so a resumed
    run carries it over as well."""
    encoding = str(msg.content[protocol.CONFIG].get(protocol.CFG_UPDATE_ENCODING, UNCOMPRESSED))
    if encoding == UNCOMPRESSED:
        return {protocol.ARRAYS: _record(shared)}
    if encoding not in ENCODINGS:
        raise ConfigError(f"the server asks for update encoding '{encoding}', which this device does not know "
                          f"(valid: {', '.join(ENCODINGS)})")
    reference = _arrays(msg.content[protocol.ARRAYS])
    server_round = int(msg.content[protocol.CONFIG][protocol.CFG_ROUND])
    residual = None
    if RESIDUAL_STATE in context.state:
        residual = _arrays(context.state[RESIDUAL_STATE])
    elif directory is not None:  # a resumed run: the residual of the last completed round
        residual = load_local(directory, server_round, "train", kind="residual")
    if residual is not None and (set(residual) != set(reference)
                                 or any(residual[k].shape != np.shape(reference[k]) for k in reference)):
        residual = None  # another model's residual: nothing to carry over
    packed, error = encode(shared, reference, encoding, residual if cfg.fed.error_feedback else None)
    if cfg.fed.error_feedback:
        context.state[RESIDUAL_STATE] = _record(error)
        if directory is not None:
            save_local(directory, server_round, "train", error, kind="residual")
    return {protocol.UPDATE: _record({protocol.UPDATE_VALUES: packed.values, protocol.UPDATE_SCALES: packed.scales})}


@app.evaluate()
@refuses_bad_input
def evaluate(msg: Message, context: Context) -> Message:
    started = time.process_time()
    cfg, data, sharing, model = _setup(msg, context)
    num_classes = int(msg.content[protocol.CONFIG][protocol.CFG_NUM_CLASSES])
    if (sharing.method.local_norm or sharing.method.target_renorm) and not _labels_usable(cfg, data):
        # AdaBN: statistics of this device's own windows under *these* weights
        # (the ones from training were computed under last round's).
        renormalize(model, data.train)
        if sharing.method.local_norm:
            _keep_local(cfg, data, context, msg, model, sharing)
    content = RecordDict()
    extra: dict[str, int | list[int] | list[float]] = {}
    if sharing.method.generated_norm:
        _generated_norm(msg, cfg, data, model, content, extra)
    result = evaluate_model(model, data.test, num_classes)
    cm = np.asarray(result["confusion"], dtype=np.int64)
    if needs_statistics(sharing.method, cfg.adapt.alignment, cfg.adapt.branch_weights):
        # Statistics of the training windows under the new global model: the
        # next round's reference is computed with the model it starts from.
        # OS entropy: noise the server could regenerate from known seeds protects nothing.
        rng = np.random.default_rng()
        stats = {
            b: privatize(s, cfg.adapt.stats_min_count, cfg.adapt.stats_noise, rng)
            for b, s in embedding_stats(model, data.train).items()
        }
        arrays, extra = to_wire(stats)
        content[protocol.STATS] = _record(arrays)
    config = msg.content[protocol.CONFIG]
    if protocol.CFG_PROJECTOR in config:  # a projector snapshot: class centroids, no single window
        centroids, counts = class_centroids(model, data.test, num_classes, int(config[protocol.CFG_PROJECTOR]))
        content[protocol.EMBEDDINGS] = _record({protocol.embed_key(b): c for b, c in centroids.items()})
        extra[protocol.EMBED_COUNT] = counts
    content[protocol.METRICS] = MetricRecord(
        {
            protocol.NUM_EXAMPLES: int(result["windows"]),
            protocol.EVAL_LOSS: float(result["loss"]),
            protocol.EVAL_WINDOWS: int(result["windows"]),
            protocol.CONFUSION: [int(v) for v in cm.ravel()],
            **extra,
            protocol.COMPUTE_SECONDS: time.process_time() - started,
            **_identity(data),
        }
    )
    return Message(content, reply_to=msg)


def _generated_norm(msg: Message, cfg: Config, data: ClientData, model: MultimodalNet, content: RecordDict,
                    extra: dict) -> None:
    """adapt.method generated: every device describes its raw windows (numpy,
    no model); a source also reports the BatchNorm statistics of its windows
    under the global model, which the server's generator learns from; a
    target takes the statistics generated for it, if any yet."""
    extra[protocol.DESCRIPTOR] = [float(v) for v in describe(data.train)]
    if _labels_usable(cfg, data):
        own = copy.deepcopy(model)
        renormalize(own, data.train)
        state = own.state_dict()
        content[protocol.NORM] = _record({k: state[k].numpy() for k in norm_keys(own)})
    elif protocol.GENERATED in msg.content:
        load_arrays(model, _arrays(msg.content[protocol.GENERATED]), strict_keys=set(norm_keys(model)))


@app.query()
@refuses_bad_input
def query(msg: Message, context: Context) -> Message:
    """The data specification of this client: shapes and counts, no samples."""
    cfg = config_from_run(context.run_config)
    data = load_client_data(cfg, context.node_config)
    spec = DataSpec(shapes=data.train.shapes(), num_classes=max(data.test.num_classes, data.train.num_classes))
    metrics = MetricRecord(
        {
            **spec.to_metrics(),
            protocol.SPEC_TRAIN_WINDOWS: len(data.train),
            protocol.SPEC_TEST_WINDOWS: len(data.test),
            **_identity(data),
        }
    )
    return Message(RecordDict({protocol.METRICS: metrics}), reply_to=msg)


__all__ = ["app"]
