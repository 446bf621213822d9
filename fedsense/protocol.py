"""Every record key, config key and metric name that crosses the wire.

Clients and server import these names from here only, so a message's
content is defined in one place (``docs/privacy.md`` lists the same fields).
"""

from __future__ import annotations

# RecordDict keys
ARRAYS = "arrays"  # ArrayRecord: the shared model parameters
CONFIG = "config"  # ConfigRecord: what the server asks for this round
METRICS = "metrics"  # MetricRecord: numbers the client reports
# One message a round (fed.messages_per_round 1): a train instruction also carries an
# evaluation of the arrays it sends, as records named EVALUATION + the evaluate
# message's own record name (EVALUATION + CONFIG its config, EVALUATION + a payload's
# name); the reply carries the evaluate reply's records under the same prefix, or, if
# the evaluation was refused on the device, EVALUATION_ERROR (code, reason).
EVALUATION = "evaluation."
EVALUATION_ERROR = "evaluation-error"
ERROR_CODE = "code"
ERROR_REASON = "reason"

# Array keys: the state-dict prefix of every domain discriminator (the one
# place that says which arrays are discriminators)
DISCRIMINATORS = "discriminators."


def is_discriminator(key: str) -> bool:
    return key.startswith(DISCRIMINATORS)

# Run config (pyproject [tool.flwr.app.config]): the only two keys
RUN_CONFIG_FILE = "config-file"
RUN_OVERRIDES = "overrides"
# Flat knobs for `flwr run . --run-config 'num-server-rounds=2 method="adabn"'`: each, when set
# (not its unset default), overrides one config key after `overrides`.
RUN_ROUNDS = "num-server-rounds"  # fed.rounds; 0: the config file's
RUN_METHOD = "method"  # adapt.method; "": the config file's
RUN_DATA_PATH = "data-path"  # data.path; "": the config file's
RUN_TARGETS = "targets"  # data.target_domains, comma-separated ids; "": the config file's
RUN_RESUME = "resume"  # "1": continue the run directory's last complete round (fedsense run --resume)

# Node config (set per SuperNode by the runtime)
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_DATA_PATH = "data-path"  # a real device's own windows (npz of docs/design.md)
NODE_ROLE = "role"  # optional on a device: "source" or "target" (default: from its domain)
# optional on a device: an absolute folder where it keeps its device-only
# parameters between runs (fedsense.devicestate); simulated clients use
# <run dir>/devices/<partition-id>
NODE_STATE_DIR = "state-dir"
# optional on a device: the fewest windows behind any statistic it sends
# (class, embedding and raw statistics, projector centroids). It never sends
# fewer than MIN_COUNT, whatever the run config or the server asks.
NODE_MIN_COUNT = "min-count"
MIN_COUNT = 5  # a mean and covariance of two windows give both windows back exactly
# With data-path, partition-id is optional: the device's number in its fleet
# (seeds its local shuffling, names it in metrics); without it, node id names it.

# Error code of a reply that refuses bad input on the device (its data or
# config); Flower's own codes are small integers.
ERROR_BAD_INPUT = 4000

# ConfigRecord keys, server -> client
CFG_ROUND = "server-round"  # injected by Flower's FedAvg
CFG_NUM_CLASSES = "num-classes"
CFG_LOCAL_EPOCHS = "local-epochs"
CFG_LR = "lr"
# privacy.dp: clip the update to this L2 norm (Flower's key for client-side fixed clipping)
CFG_CLIPPING_NORM = "clipping_norm"

# fed.update_encoding of this round (fedsense.compression): "float32" (a train reply's
# ARRAYS are the trained arrays) or a codec's name (the reply has no ARRAYS but an
# UPDATE record: the change against the global arrays, packed in their order)
CFG_UPDATE_ENCODING = "update-encoding"
UPDATE = "update"  # RecordDict key, client -> server (train)
UPDATE_VALUES = "values"  # (total size,) float16 or int8
UPDATE_SCALES = "scales"  # (tensors,) float32 per-tensor scales (int8), else (0,)

# MetricRecord keys, client -> server
NUM_EXAMPLES = "num-examples"  # weight of the reply (training windows used)
IS_TARGET = "is-target"  # 1 for a target client, 0 for a source client
PARTITION = "partition-id"  # which simulated client (a device's partition-id, or -1)
LOSS_TASK = "loss-task"  # mean cross-entropy of the local training steps
TASK_WINDOWS = "task-windows"  # labelled windows behind loss-task (its weight)
TRAIN_STEPS = "train-steps"
# CPU seconds the device spent on a train or evaluate message (its handler's
# process time: data, forward and backward passes), for comparing what
# methods cost a device; train-steps 0 means no gradient step
COMPUTE_SECONDS = "compute-seconds"


def modality_windows_key(modality: str) -> str:
    """Metric key (train replies): the training windows that have ``modality``
    (0: the device lacks it; its branch is then not averaged in)."""
    return f"windows.{modality}"


EVAL_LOSS = "eval-loss"  # mean cross-entropy on the held-out windows
EVAL_WINDOWS = "eval-windows"
CONFUSION = "confusion"  # K*K ints, row-major: row = true class

# Query reply (data specification; no samples)
QUERY_MESSAGE = "query"
SPEC_NUM_CLASSES = "num-classes"
SPEC_TRAIN_WINDOWS = "train-windows"
SPEC_TEST_WINDOWS = "test-windows"


def shape_keys(modality: str) -> tuple[str, str]:
    """Metric keys of one modality's ``(channels, steps)`` in a query reply."""
    return f"shape.{modality}.channels", f"shape.{modality}.steps"

# ---- adaptation ------------------------------------------------------------
# ConfigRecord keys, server -> client (train)
CFG_COEFF = "adapt-coeff"  # gradient reversal coefficient of this round
# 0: a warm-up round of federated discriminators (FADE): train on labels only
CFG_ADAPT_ACTIVE = "adapt-active"

# m3bat_local (fedsense.methods.local; array layouts in fedsense.methods.wire)
# sources -> server (evaluate) -> targets (evaluate instructions):
RAW = "raw"  # per class and 3-axis modality: count, mean and covariance of window means, energy
CLASS_STATS = "class-stats"  # per class and branch: count, mean and variance of embeddings
# targets -> server (evaluate): what their adaptation did this round (numbers)
SELFTRAIN_PREFIX = "selftrain."
ST_CALIBRATION_CHANGED = "selftrain.calibration_changed"  # 1: the chosen calibration differs from last round's
ST_NORM_LOCAL = "selftrain.norm_local"  # 1: evaluated with its own BatchNorm statistics


def selftrain_key(name: str) -> str:
    return f"{SELFTRAIN_PREFIX}{name}"


def cfg_weight(branch: str) -> str:
    """Config key of a branch's adversarial loss weight."""
    return f"weight.{branch}"


# RecordDict key of the pooled source statistics (train messages, statistics alignment)
REFERENCE = "reference"

# Projector snapshot (output.projector_rounds): the evaluate config asks for it
# with the minimum windows per class; the reply's EMBEDDINGS record holds one
# (K, D) array of class centroids per branch, EMBED_COUNT the windows behind
# each row (0: too few, the row is zeros).
CFG_PROJECTOR = "projector-min-count"
EMBEDDINGS = "embeddings"
EMBED_COUNT = "embed-count"


def embed_key(branch: str) -> str:
    return f"embed.{branch}"
# RecordDict key of a client's embedding statistics (evaluate replies)
STATS = "stats"


def stats_keys(branch: str) -> tuple[str, str, str]:
    """(mean array key, covariance array key, count metric/config key) of a branch."""
    return f"stats.{branch}.mean", f"stats.{branch}.cov", f"stats.{branch}.count"


# MetricRecord keys, client -> server (train), per discriminator branch.
# Every reply carries every branch; 0.0 for both means the device took no
# adversarial step on that branch this round (a logistic loss is never 0).
def loss_domain_key(branch: str) -> str:
    return f"loss-domain.{branch}"


def disc_acc_key(branch: str) -> str:
    return f"disc-acc.{branch}"


# ---- generated normalisation (adapt.method generated, fedsense.generator) ----
# evaluate replies: the device's descriptor (per modality and channel, mean and
# std of its raw training windows) as a list of numbers; sources also send
# NORM, the BatchNorm statistics of their own windows under the global model
DESCRIPTOR = "descriptor"
NORM = "norm"
# evaluate instructions to a target: the statistics generated for it
GENERATED = "generated"
