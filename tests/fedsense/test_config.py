"""Typed config: defaults, YAML, dotted overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fedsense import config as config_mod
from fedsense import configfile
from fedsense.config import Config, ConfigError, ShiftConfig
from fedsense.configfile import dump, from_dict, load, parse_override, split_overrides

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = REPO / "configs" / "synthetic.yaml"
DEFAULT = REPO / "configs" / "default.yaml"


def error_of(*overrides: str, data: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(data, list(overrides))
    return str(info.value)


# --------------------------------------------------------------------------- #
# Loading


def test_defaults_match_dataclass_defaults() -> None:
    cfg = from_dict(None)
    assert cfg == Config()
    assert cfg.data.kind == "hapt"
    assert cfg.model.channels == [32, 48, 64]
    assert cfg.fed.rounds == 20
    assert cfg.adapt.method == "none"


def test_an_empty_yaml_file_is_refused_not_run_with_every_default(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="empty.yaml: the file is empty"):
        load(path)
    assert from_dict({}) == Config()  # in code, an empty mapping still means the defaults


def test_load_synthetic_yaml() -> None:
    cfg = load(SYNTHETIC)
    assert cfg.data.kind == "synthetic"
    assert cfg.data.target_domains == [6]
    assert cfg.data.synthetic.modalities == {"acc": [3, 64], "gyro": [3, 64]}
    assert cfg.model.channels == [16, 32]
    assert cfg.model.embed_dim == 32
    assert cfg.fed.rounds == 3
    # Keys the file does not set keep their defaults.
    assert cfg.model.kernel_size == 5
    assert cfg.train.lr == pytest.approx(0.003)


def test_load_default_yaml() -> None:
    cfg = load(DEFAULT)
    assert cfg.data.kind == "hapt"
    assert cfg.data.target_domains == [25, 26, 27, 28, 29, 30]


def test_yaml_file_values_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("seed: 7\ntrain:\n  lr: 1\n  optimizer: sgd\n")
    cfg = load(path)
    assert cfg.seed == 7
    assert cfg.train.optimizer == "sgd"
    # An int where a float is expected is accepted and stored as a float.
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


# --------------------------------------------------------------------------- #
# Overrides


def test_dotted_overrides_scalars_and_nested_sections() -> None:
    cfg = load(
        SYNTHETIC,
        [
            "seed=3",
            "fed.rounds=5",
            "data.synthetic.subjects=4",
            "model.fusion=attention",
            "train.lr=0.01",
            "output.name=my run",
        ],
    )
    assert cfg.seed == 3
    assert cfg.fed.rounds == 5
    assert cfg.data.synthetic.subjects == 4
    assert cfg.data.synthetic.classes == 4  # sibling from the file survives
    assert cfg.model.fusion == "attention"
    assert cfg.train.lr == pytest.approx(0.01)
    assert cfg.output.name == "my run"


def test_override_list_value_parsed_as_yaml() -> None:
    cfg = load(DEFAULT, ["data.target_domains=[25,26]"])
    assert cfg.data.target_domains == [25, 26]
    cfg = load(SYNTHETIC, ["model.channels=[8, 16, 24]"])
    assert cfg.model.channels == [8, 16, 24]


def test_override_mapping_and_list_of_sections() -> None:
    cfg = from_dict(
        None,
        [
            "data.synthetic.modalities={acc: [3, 32], audio: [1, 128]}",
            "data.shifts=[{domains: [2], gain: 2, mirror: [x]}]",
        ],
    )
    assert cfg.data.synthetic.modalities == {"acc": [3, 32], "audio": [1, 128]}
    assert cfg.data.shifts == [ShiftConfig(domains=[2], gain=2.0, mirror=["x"])]
    assert isinstance(cfg.data.shifts[0].gain, float)


def test_override_value_may_contain_equals_and_be_empty() -> None:
    assert from_dict(None, ["data.path=a=b.npz"]).data.path == "a=b.npz"
    assert from_dict({"data": {"path": "x"}}, ["data.path="]).data.path == ""


def test_later_override_wins_and_overrides_beat_file() -> None:
    cfg = load(SYNTHETIC, ["fed.rounds=4", "fed.rounds=9"])
    assert cfg.fed.rounds == 9


def test_from_dict_does_not_mutate_its_input() -> None:
    data = {"fed": {"rounds": 2}}
    from_dict(data, ["fed.rounds=7"])
    assert data == {"fed": {"rounds": 2}}


def test_parse_override_errors() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("fed.rounds")
    with pytest.raises(ConfigError, match="no key"):
        parse_override("=3")
    with pytest.raises(ConfigError, match="data.target_domains"):
        parse_override("data.target_domains=[1, 2")
    assert parse_override(" fed.rounds = 3") == ("fed.rounds", 3)


def test_split_overrides() -> None:
    text = "fed.rounds=2\n\n   seed=4  \n\tdata.target_domains=[1, 2]\n"
    assert split_overrides(text) == ["fed.rounds=2", "seed=4", "data.target_domains=[1, 2]"]
    assert split_overrides("") == []
    assert split_overrides("  \n \n") == []


# --------------------------------------------------------------------------- #
# Errors name the key


def test_unknown_top_level_key_is_named() -> None:
    msg = error_of("bogus=1")
    assert "'bogus'" in msg
    assert "fed" in msg and "model" in msg  # lists what is valid there


def test_unknown_nested_key_is_named_with_its_dots() -> None:
    assert "'fed.roundz'" in error_of("fed.roundz=3")
    msg = error_of("data.synthetic.subjectz=3")
    assert "'data.synthetic.subjectz'" in msg
    assert "subjects" in msg
    assert "'data.shifts[0].bogus'" in error_of("data.shifts=[{bogus: 1}]")


def test_unknown_key_in_yaml_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("model:\n  embed_dims: 3\n")
    with pytest.raises(ConfigError, match=r"model\.embed_dims"):
        load(path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("fed.rounds=three", "fed.rounds"),  # string for int
        ("fed.rounds=true", "fed.rounds"),  # bool for int
        ("seed=1.5", "seed"),  # float for int
        ("data.target_domains=1.5", "data.target_domains"),  # float for list
        ("data.target_domains=[1, x]", "data.target_domains[1]"),  # bad list item
        ("train.lr=fast", "train.lr"),  # string for float
        ("train.lr=false", "train.lr"),  # bool for float
        ("output.name=[a]", "output.name"),  # list for str
        ("model=3", "model"),  # scalar for a section
        ("data.synthetic.modalities=[3, 64]", "data.synthetic.modalities"),  # list for dict
    ],
)
def test_wrong_type_names_the_key(override: str, key: str) -> None:
    msg = error_of(override)
    assert msg.startswith(f"{key}:"), msg


def test_literal_bad_value_lists_allowed() -> None:
    msg = error_of("data.kind=csv")
    assert msg.startswith("data.kind:")
    for allowed in ("synthetic", "hapt", "npz"):
        assert allowed in msg
    msg = error_of("train.optimizer=rmsprop")
    assert "train.optimizer" in msg and "adam" in msg and "sgd" in msg


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("model.encoder", ["conv1d"]),
        ("model.fusion", ["attention", "concat"]),
        ("adapt.method", ["none"]),
    ],
)
def test_unknown_registry_name_lists_valid(key: str, valid: list[str]) -> None:
    msg = error_of(f"{key}=nonexistent")
    assert key in msg and "nonexistent" in msg
    for name in valid:
        assert name in msg


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("fed.rounds=0", "fed.rounds"),
        ("fed.rounds=-2", "fed.rounds"),
        ("fed.fraction_train=0", "fed.fraction_train"),
        ("fed.fraction_train=1.5", "fed.fraction_train"),
        ("fed.fraction_evaluate=-0.1", "fed.fraction_evaluate"),
        ("fed.min_clients=0", "fed.min_clients"),
        ("fed.timeout=0", "fed.timeout"),
        ("fed.checkpoint_every=0", "fed.checkpoint_every"),
        ("train.lr=0", "train.lr"),
        ("train.weight_decay=-1", "train.weight_decay"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.local_epochs=0", "train.local_epochs"),
        ("data.test_fraction=0", "data.test_fraction"),
        ("data.test_fraction=1", "data.test_fraction"),
        ("data.window=4", "data.window"),
        ("data.step=0", "data.step"),
        ("data.step=200", "data.step"),  # > window
        ("model.kernel_size=0", "model.kernel_size"),
        ("model.embed_dim=0", "model.embed_dim"),
        ("model.channels=[]", "model.channels"),
        ("model.channels=[8, 0]", "model.channels"),
        ("model.dropout=1.0", "model.dropout"),
        ("data.synthetic.subjects=0", "data.synthetic.subjects"),
        ("data.synthetic.classes=1", "data.synthetic.classes"),
        ("data.synthetic.windows_per_class=3", "data.synthetic.windows_per_class"),
        ("data.synthetic.modalities={acc: [3, 4]}", "data.synthetic.modalities.acc"),
        ("data.shifts=[{rotate: [1, 2]}]", "data.shifts[0].rotate"),
        ("data.shifts=[{mirror: [w]}]", "data.shifts[0].mirror"),
        ("data.shifts=[{noise: -1}]", "data.shifts[0].noise"),
        ("data.shifts=[{resample: 0}]", "data.shifts[0].resample"),
        ("output.projector_rounds=[0]", "output.projector_rounds"),
        ("output.projector_rounds=[21]", "output.projector_rounds"),  # default fed.rounds is 20
        ("output.projector_min_count=4", "output.projector_min_count"),
        ("adapt.stats_min_count=4", "adapt.stats_min_count"),  # two windows' mean and covariance give them back
    ],
)
def test_range_checks_name_the_key(override: str, key: str) -> None:
    assert error_of(override).startswith(f"{key}:")


def test_boundary_values_are_accepted() -> None:
    cfg = from_dict(
        None,
        ["fed.rounds=1", "fed.fraction_train=1", "fed.fraction_evaluate=0", "data.step=128"],
    )
    assert cfg.fed.rounds == 1 and cfg.fed.fraction_evaluate == 0.0 and cfg.data.step == 128


# --------------------------------------------------------------------------- #
# Files


def test_malformed_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("fed:\n  rounds: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- fed\n- model\n", "just a string\n", "42\n"])
def test_non_mapping_top_level(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(path)


def test_from_dict_refuses_non_mapping_with_config_error() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        from_dict([1, 2])  # type: ignore[arg-type]


def test_exponent_float_without_dot_is_a_number(tmp_path: Path) -> None:
    assert from_dict(None, ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="train.lr"):
        from_dict(None, ["train.lr=fast"])


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_non_finite_numbers_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="fed.timeout: expected a finite number"):
        from_dict(None, [f"fed.timeout={value}"])


def test_empty_section_means_defaults() -> None:
    assert from_dict({"data": None}).data == from_dict(None).data


def test_numeric_name_is_kept_as_text() -> None:
    assert from_dict(None, ["output.name=123"]).output.name == "123"


def test_synthetic_needs_a_modality() -> None:
    with pytest.raises(ConfigError, match="data.synthetic.modalities"):
        from_dict(None, ["data.synthetic.modalities={}"])


# --------------------------------------------------------------------------- #
# Round trip


def test_dump_then_load_round_trips(tmp_path: Path) -> None:
    cfg = load(
        SYNTHETIC,
        [
            "seed=11",
            "data.target_domains=[5, 6]",
            "data.modalities=[gyro]",
            "data.shifts=[{domains: [6], rotate: [0, 90, 0], mirror: [y], gain: 1.5}]",
            "data.synthetic.modalities={acc: [3, 32], gyro: [3, 16]}",
            "model.fusion=attention",
            "train.optimizer=sgd",
            "fed.mode=centralized",
            "output.name=rt",
        ],
    )
    assert cfg != Config()  # the round trip below is not of a trivial config
    path = tmp_path / "config.yaml"
    path.write_text(dump(cfg))
    again = load(path)
    assert again == cfg
    assert config_mod.to_dict(again) == config_mod.to_dict(cfg)
    # Field types survive (float stays float, not int, after YAML).
    assert isinstance(again.data.shifts[0].rotate[1], float)


def test_dump_covers_every_section() -> None:
    text = dump(Config())
    for f in dataclasses.fields(Config):
        assert f"{f.name}:" in text


def test_fed_aggregation_names_and_bounds_are_checked():
    from fedsense.config import ConfigError
    from fedsense.configfile import load
    from tests.conftest import SYNTHETIC

    assert load(SYNTHETIC, ["fed.aggregation=krum", "fed.byzantine=2"]).fed.aggregation == "krum"
    with pytest.raises(ConfigError, match="fed.aggregation: unknown 'avg' .*trimmed-mean"):
        load(SYNTHETIC, ["fed.aggregation=avg"])
    with pytest.raises(ConfigError, match=r"fed.trim_fraction: must be in \[0, 0.5\)"):
        load(SYNTHETIC, ["fed.trim_fraction=0.5"])


def test_update_encoding_is_checked_against_the_codecs() -> None:
    assert configfile.from_dict({}, ["fed.update_encoding=int8"]).fed.update_encoding == "int8"
    with pytest.raises(ConfigError, match=r"fed.update_encoding: unknown 'int4' \(valid: float32, float16, int8\)"):
        configfile.from_dict({}, ["fed.update_encoding=int4"])


def test_differential_privacy_refuses_compressed_updates() -> None:
    with pytest.raises(ConfigError, match="privacy.dp: needs fed.update_encoding 'float32'"):
        configfile.from_dict({}, ["privacy.dp=true", "fed.update_encoding=float16"])
