"""Property-based fuzzing of everything a user hands poisonlab (Hypothesis): scenario dicts and YAML text, the
budget / classes / parameter parsers, npz and IDX files (made from random arrays, and valid files mutated byte by
byte), poison sets and setups files. The property: a valid result, or a PoisonlabError with a message; never any
other exception. The default run tries FAST examples per target (derandomised: the same examples every run), the
slow run THOROUGH."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from poisonlab.bench.plan import make_plan
from poisonlab.bench.scenario import Scenario, load_yaml, parse_budget, parse_classes, parse_params, scenario_from_dict
from poisonlab.bench.setups import load_setups
from poisonlab.data.files import read_idx
from poisonlab.data.loaders import load_npz
from poisonlab.errors import PoisonlabError
from poisonlab.threat import PoisonSet, resolve_budget

FAST, THOROUGH = 40, 400

json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) |
                           st.text(max_size=12), lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
NAMES = ["digits", "npz", "cifar10", "convnet", "logistic", "lasso", "badnets", "label-flip", "feature-collision",
         "metapoison", "spectral-signatures", "deep-knn", "none", "frozen", "scratch", "grey-box", "cpu", "cuda", "gpu",
         "adam", "exact", "flip-crop"]
field_values = json_values | st.sampled_from(NAMES) | st.floats(-2, 2) | st.integers(-3, 12) | st.integers() | \
    st.lists(st.integers(-1, 11), max_size=4) | st.dictionaries(st.sampled_from(["patch_size", "removal", "epochs",
                                                                                "steps", "k", "lr"]), json_values)
scenario_dicts = st.dictionaries(st.sampled_from([*Scenario.model_fields, "trian_size", "attack_param"]),
                                 field_values, max_size=8)


def check_scenario(data: dict, tmp: Path) -> None:
    make_plan(scenario_from_dict(data))


def check_yaml(text: str, tmp: Path) -> None:
    path = tmp / "s.yaml"
    path.write_text(text)
    check_scenario(load_yaml(path), tmp)


def check_parsers(text: str, tmp: Path) -> None:
    for parse in (parse_classes, lambda t: parse_params([t]), lambda t: parse_params([t, t], "defense")):
        try:
            parse(text)
        except PoisonlabError as exc:
            assert str(exc)
    resolve_budget(parse_budget(text), 100)


def npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def check_npz_arrays(arrays: dict, tmp: Path) -> None:
    path = tmp / "d.npz"
    path.write_bytes(npz_bytes(arrays))
    load_npz(path)


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """`valid` truncated, with bytes overwritten, or with bytes inserted."""
    def apply(edits):
        data = bytearray(valid)
        for kind, where, byte in edits:
            where %= max(1, len(data))
            if kind == 0:
                del data[where:]
            elif kind == 1 and data:
                data[where] = byte
            else:
                data[where:where] = bytes([byte])
        return bytes(data)
    return st.lists(st.tuples(st.integers(0, 2), st.integers(0, len(valid)), st.integers(0, 255)), min_size=1,
                    max_size=4).map(apply)


rng = np.random.default_rng(0)
VALID_NPZ = npz_bytes({"x": rng.integers(0, 256, (20, 6, 6), dtype=np.uint8), "y": np.arange(20) % 2})
VALID_IDX = bytes([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3]) + bytes(range(18))


def check_npz_bytes(data: bytes, tmp: Path) -> None:
    path = tmp / "d.npz"
    path.write_bytes(data)
    load_npz(path)


def check_idx_bytes(data: bytes, tmp: Path) -> None:
    path = tmp / "images-idx3-ubyte"
    path.write_bytes(data)
    read_idx(path, 3)


def valid_poison_set() -> tuple[bytes, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        path = PoisonSet(torch.tensor([1, 3]), torch.rand(2, 1, 6, 6), torch.tensor([1, 0]), 2, "label-flip").save(
            Path(folder) / "p")
        return path.read_bytes(), path.with_suffix(".json").read_bytes()


VALID_SET, VALID_MANIFEST = valid_poison_set()


def check_poison_set(files: tuple[bytes, bytes], tmp: Path) -> None:
    (tmp / "p.npz").write_bytes(files[0])
    (tmp / "p.json").write_bytes(files[1])
    PoisonSet.load(tmp / "p.npz")


def check_setups(value, tmp: Path) -> None:
    path = tmp / "setups.json"
    path.write_text(json.dumps(value))
    load_setups.__wrapped__(str(path))


setup_entries = st.fixed_dictionaries({"target class": field_values, "target index": field_values,
                                       "base class": field_values, "base indices": field_values})
array_dicts = st.dictionaries(
    st.sampled_from(["x", "y", "x_train", "y_train", "x_test", "y_test", "class_names", "train_index"]),
    hnp.arrays(st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_, np.int8]),
               hnp.array_shapes(min_dims=1, max_dims=4, max_side=6)), max_size=5)

TARGETS: dict[str, tuple[st.SearchStrategy, Callable]] = {
    "scenario dicts": (scenario_dicts, check_scenario),
    "scenario YAML text": (st.text(max_size=80) | scenario_dicts.map(lambda d: json.dumps(d)), check_yaml),
    "budget, classes and KEY=VALUE text": (st.text(max_size=12) | st.sampled_from(
        ["0.05", "10", "1", "1.0", "2.0", "-1", "nan", "inf", "1e400", "0,4", "0,,4", "k=", "=v", "k=[", "k=1=2"]),
        check_parsers),
    "npz from random arrays": (array_dicts, check_npz_arrays),
    "npz bytes mutated": (mutated(VALID_NPZ), check_npz_bytes),
    "IDX bytes mutated": (mutated(VALID_IDX), check_idx_bytes),
    "poison set and manifest mutated": (st.tuples(mutated(VALID_SET), st.just(VALID_MANIFEST)) |
                                        st.tuples(st.just(VALID_SET), mutated(VALID_MANIFEST)), check_poison_set),
    "setups JSON": (st.lists(setup_entries, max_size=3) | json_values, check_setups),
}


def holds(name: str, examples: int, tmp: Path) -> int:
    """Run TARGETS[name]'s check on up to `examples` drawn inputs; anything but success or a PoisonlabError
    fails. Returns how many inputs were tried."""
    strategy, check = TARGETS[name]
    tried = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def property_(value):
        tried.append(1)
        try:
            check(value, tmp)
        except PoisonlabError as exc:
            assert str(exc).strip(), "a PoisonlabError without a message"

    property_()
    return len(tried)


@pytest.mark.parametrize("name", TARGETS)
def test_user_input_gives_a_result_or_a_poisonlab_error(name, tmp_path):
    assert holds(name, FAST, tmp_path) >= FAST // 2


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGETS)
def test_user_input_gives_a_result_or_a_poisonlab_error_thoroughly(name, tmp_path):
    assert holds(name, THOROUGH, tmp_path) >= THOROUGH // 2


def test_the_valid_seeds_of_the_mutations_are_valid(tmp_path):
    """The mutated files start from files that load (so the fuzzing explores near valid input)."""
    check_npz_bytes(VALID_NPZ, tmp_path)
    check_idx_bytes(VALID_IDX, tmp_path)
    check_poison_set((VALID_SET, VALID_MANIFEST), tmp_path)
