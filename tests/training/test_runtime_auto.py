"""runtime 'auto' settings: XLA, mixed precision and steps per execution from device descriptions.

No GPU here: the decision is a pure function (`resolve_runtime`), tested on fake
device descriptions shaped like `tf.config.experimental.get_device_details`.
"""

import keras
import pytest
import tensorflow as tf

from sft_keras.config import get_default_config, validate_config
from sft_keras.errors import ConfigError
from sft_keras.tasks import compile_for_task
from sft_keras.training.distribute import (
    SMALL_MODEL_PARAMS,
    SMALL_MODEL_STEPS_PER_EXECUTION,
    local_devices,
    precision_policy,
    resolve_runtime,
    runtime_summary,
)


def _gpu(major, minor, name="GPU"):
    return {"device_type": "GPU", "name": name, "compute_capability": (major, minor)}


H100, A100, T4, V100, P100 = _gpu(9, 0), _gpu(8, 0), _gpu(7, 5), _gpu(7, 0), _gpu(6, 0)
SMALL, LARGE = SMALL_MODEL_PARAMS // 2, SMALL_MODEL_PARAMS * 4


@pytest.mark.parametrize("devices,num_params,expected", [
    ([], SMALL, (False, "float32", 1)),  # CPU: as before (Keras's auto is off there too).
    ([], LARGE, (False, "float32", 1)),
    ([H100], SMALL, (True, "mixed_bfloat16", SMALL_MODEL_STEPS_PER_EXECUTION)),
    ([A100] * 8, LARGE, (True, "mixed_bfloat16", 1)),  # XLA under MirroredStrategy too.
    ([T4], LARGE, (True, "mixed_float16", 1)),
    ([V100, V100], SMALL, (True, "mixed_float16", SMALL_MODEL_STEPS_PER_EXECUTION)),
    ([P100], LARGE, (True, "float32", 1)),  # No tensor cores: no mixed precision.
    ([A100, T4], LARGE, (True, "mixed_float16", 1)),  # Mixed cards: the oldest decides.
    ([{"device_type": "TPU"}] * 8, SMALL, (False, "mixed_bfloat16", 8)),
    ([H100], None, (True, "mixed_bfloat16", 1)),  # Size unknown: one step per execution.
])
def test_auto_picks_by_device(devices, num_params, expected):
    assert resolve_runtime(devices=devices, num_params=num_params)[:3] == expected


def test_explicit_values_win_over_auto():
    settings = resolve_runtime("false", "float32", 3, devices=[H100], num_params=SMALL)
    assert settings[:3] == (False, "float32", 3)
    assert resolve_runtime("TRUE", "mixed_float16", devices=[])[:3] == (True, "mixed_float16", 1)


def test_the_reason_names_the_devices():
    assert resolve_runtime(devices=[A100, A100]).reason == "2 GPU(s), compute capability 8.0"
    assert resolve_runtime(devices=[]).reason == "no GPU or TPU"


@pytest.mark.parametrize("key,value,match", [
    ("steps_per_execution", -1, r"runtime\.steps_per_execution must be an integer >= 0.*"
                                r"Received: runtime\.steps_per_execution=-1"),
    ("precision", "bf16", r"runtime\.precision must be one of 'auto'.*Received: "
                          r"runtime\.precision='bf16'"),
])
def test_bad_runtime_values_are_rejected(key, value, match):
    with pytest.raises(ConfigError, match=match):
        validate_config({"runtime": {key: value}})


def test_on_this_cpu_auto_changes_nothing_and_the_run_says_so():
    assert tf.config.list_physical_devices("GPU") == [] and local_devices() == []
    config = get_default_config()
    assert (config.runtime.precision, config.runtime.jit_compile,
            config.runtime.steps_per_execution) == ("auto", "auto", 0)
    with precision_policy(config.runtime.precision):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    compile_for_task(model, config, ["a", "b", "c"])
    assert model.dtype_policy.name == "float32"
    assert runtime_summary(model, tf.distribute.get_strategy()) == (
        "Runtime: 1 replica(s), no GPU or TPU: jit_compile=False, precision=float32, "
        "steps_per_execution=1.")
