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

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from flwr.app import Context, Error, Message, MetricRecord, RecordDict

from fedsense import protocol
from fedsense.config import Config, ConfigError
from fedsense.data.base import DatasetError
from fedsense.data.clients import ClientData, load_client_data
from fedsense.data.missing import conform
from fedsense.devicestate import load_kept, load_local
from fedsense.embeddings import class_centroids
from fedsense.engine import evaluate as evaluate_model
from fedsense.floors import device_floor, floor_rows, raise_floor
from fedsense.methods import METHODS, Method, Step
from fedsense.methods.base import step_seed
from fedsense.models import DataSpec
from fedsense.runmodel import build_run_model, sharing_of
from fedsense.params import Sharing, load_arrays, shared_arrays, shared_keys
from fedsense.privacy import clip_update
from fedsense.runconfig import config_from_run
from flwr.clientapp import ClientApp

from fl_client.evaluate_first import evaluate_first
from fl_client.device_state import LOCAL_STATE, keep_local, packed_update, state_dir
from fl_client.fault_mod import inject_faults
from fl_client.records import to_numpy, to_record

# evaluate_first: a train instruction carrying an evaluation is answered as an evaluate message
# (through the app itself) and then a train message; inject_faults: a no-op unless the run's
# faults: section names this client
app = ClientApp(mods=[evaluate_first(lambda msg, context: app(msg, context)), inject_faults])
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
            _device_log().info("%s took %.2fs; process %d started %.2fs before it", kind, time.time() - started,
                               os.getpid(), age if age is not None else float("nan"))
        return reply

    return wrapped


def _seed(cfg: Config, data: ClientData, server_round: int, phase: int) -> int:
    return step_seed(cfg.seed, data.partition_id, server_round, phase)


def _setup(msg: Message, context: Context, phase: int) -> tuple[Method, Sharing, Step]:
    cfg = config_from_run(context.run_config)
    cfg = raise_floor(cfg, device_floor(context.node_config))
    data = load_client_data(cfg, context.node_config)
    method = METHODS[cfg.adapt.method]
    sharing = sharing_of(cfg)
    config = msg.content[protocol.CONFIG]
    num_classes = int(config[protocol.CFG_NUM_CLASSES])
    spec = DataSpec.from_metrics(dict(config))
    if spec.shapes:  # the federation's inputs: a modality this device lacks is masked
        data = replace(data, train=conform(data.train, spec.shapes), test=conform(data.test, spec.shapes))
    model = build_run_model(DataSpec(shapes=data.train.shapes(), num_classes=num_classes), cfg)
    load_arrays(model, to_numpy(msg.content[protocol.ARRAYS]), strict_keys=shared_keys(model, sharing))
    stored: dict[str, np.ndarray] | None = None
    if LOCAL_STATE in context.state:  # device-only parameters from earlier rounds of this run
        stored = to_numpy(context.state[LOCAL_STATE])
    elif (directory := state_dir(cfg, data, context)) is not None:  # a resumed run: from the device's disk
        stored = load_local(directory, int(config[protocol.CFG_ROUND]), msg.metadata.message_type)
    state = load_kept(model, stored) if stored is not None else {}
    payload = {name: to_numpy(record) for name, record in msg.content.array_records.items() if name != protocol.ARRAYS}
    server_round = int(config[protocol.CFG_ROUND])
    step = Step(cfg=cfg, model=model, data=data, config=dict(config), payload=payload,
                seed=_seed(cfg, data, server_round, phase), state=state)
    return method, sharing, step


def _identity(data: ClientData) -> dict[str, int]:
    return {protocol.IS_TARGET: int(data.role == "target"), protocol.PARTITION: data.partition_id}


@app.train()
@refuses_bad_input
def train(msg: Message, context: Context) -> Message:
    started = time.process_time()
    method, sharing, step = _setup(msg, context, phase=0)
    cfg, data, model = step.cfg, step.data, step.model
    config = msg.content[protocol.CONFIG]
    result = method.train(step)
    keep_local(step, sharing, context, msg.metadata.message_type)
    numbers = {
        **result.metrics,
        **{protocol.modality_windows_key(m): data.train.windows_with(m) for m in model.modalities},
        protocol.COMPUTE_SECONDS: time.process_time() - started,
        **_identity(data),
    }
    metrics = MetricRecord(numbers)
    shared = shared_arrays(model, sharing)
    if protocol.CFG_CLIPPING_NORM in config:  # privacy.dp: Flower's client-side fixed clipping
        shared = clip_update(shared, to_numpy(msg.content[protocol.ARRAYS]), float(config[protocol.CFG_CLIPPING_NORM]))
    update = packed_update(cfg, msg, context, shared, state_dir(cfg, data, context))
    records = {name: to_record(arrays) for name, arrays in result.records.items()}
    return Message(RecordDict({**update, **records, protocol.METRICS: metrics}), reply_to=msg)


@app.evaluate()
@refuses_bad_input
def evaluate(msg: Message, context: Context) -> Message:
    started = time.process_time()
    method, sharing, step = _setup(msg, context, phase=1)
    data, model = step.data, step.model
    num_classes = int(msg.content[protocol.CONFIG][protocol.CFG_NUM_CLASSES])
    result = method.evaluate(step)
    if result.keep:
        keep_local(step, sharing, context, msg.metadata.message_type)
    scores = evaluate_model(model, data.test, num_classes)
    cm = floor_rows(np.asarray(scores["confusion"], dtype=np.int64), device_floor(context.node_config))
    content = RecordDict({name: to_record(arrays) for name, arrays in result.records.items()})
    extra: dict[str, int | float | list[int] | list[float]] = dict(result.metrics)
    config = msg.content[protocol.CONFIG]
    if protocol.CFG_PROJECTOR in config:  # a projector snapshot: class centroids, no single window
        least = max(int(config[protocol.CFG_PROJECTOR]), device_floor(context.node_config))
        centroids, counts = class_centroids(model, data.test, num_classes, least)
        content[protocol.EMBEDDINGS] = to_record({protocol.embed_key(b): c for b, c in centroids.items()})
        extra[protocol.EMBED_COUNT] = counts
    numbers = {
        protocol.NUM_EXAMPLES: int(scores["windows"]),
        protocol.EVAL_LOSS: float(scores["loss"]),
        protocol.EVAL_WINDOWS: int(scores["windows"]),
        protocol.CONFUSION: [int(v) for v in cm.ravel()],
        **extra,
        protocol.COMPUTE_SECONDS: time.process_time() - started,
        **_identity(data),
    }
    content[protocol.METRICS] = MetricRecord(numbers)
    return Message(content, reply_to=msg)


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
