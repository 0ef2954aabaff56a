"""Training throughput: the sft_keras path vs. a hand-written fit on cached tensors.

Measures examples/second of training steps (after warm-up steps, which
include tracing and XLA compilation), side by side in one process:

  hand        the same model (same builder, optimizer, loss, metrics,
              jit_compile) fit by hand on the training inputs pre-decoded /
              pre-tokenized and cached in memory
              (`Dataset.from_tensor_slices(...).cache().repeat()`), no callbacks;
  sft_model   the sft_keras model path: as `sft-train` fits (its callbacks,
              `sft_keras.training.loop.build_callbacks`: checkpoints,
              TensorBoard, CSV log, early stopping) on the same cached tensors;
  sft_full    the full sft_keras path: the config's own tf.data pipeline
              (the modality's `make_dataset`: decode / tokenize, cache; then
              the loop's per-epoch shuffle and batching) + model + compile +
              fit with sft-train's callbacks.

Every variant is built by the run's modality (`sft_keras.modalities`) and
compiled by `sft_keras.tasks.compile_for_task`, as `sft-train` does; the
cached tensors are the modality's own training dataset, read once (with
`data.cache`, the default, that also fills the cache `sft_full` then reads:
it times epochs after the first).
Each sft_* fit ends with one untimed validation step on a cached batch: its
callbacks monitor `train.monitor`, a `val_*` metric.

`time ratio` is seconds per example relative to `hand` (targets: <= 1.03
for sft_model, <= 1.05 for sft_full). MFU = achieved training FLOP/s /
`--peak_tflops` (default 989: H100 SXM dense bf16). Training FLOPs per
example are estimated analytically: BERT 6 * non-embedding params * tokens +
12 * layers * tokens^2 * hidden (attention); image backbones 3 x forward,
forward = 2 x the multiply-accumulates usually quoted as "GFLOPs" (ResNet50:
4.1 G at 224 px, scaled by pixel count).

Usage:

    python benchmarks/throughput.py --config=benchmarks/throughput_configs.py:tiny_bert
    python benchmarks/throughput.py --config=configs/quickstart.py \\
        --config.data.sequence_length=128 --steps=10
    python benchmarks/throughput.py --config=benchmarks/throughput_configs.py:resnet50 \\
        --steps=5 --warmup=2
    python benchmarks/throughput.py --smoke     # tiny BERT, 1 + 2 steps: a check, not a speed
    python benchmarks/throughput.py --smoke --config=benchmarks/throughput_configs.py:small_cnn
    # GPU: bf16 + XLA, every local GPU
    python benchmarks/throughput.py --config=configs/quickstart.py \\
        --precision=mixed_bfloat16 --jit_compile=true --strategy=auto --config.train.batch_size=256

`--smoke` (or SFT_SMOKE=1) runs any config for 1 warm-up + 2 timed steps,
1 repeat, at most 32 training examples in batches of at most 8; without
`--config` it uses `benchmarks/throughput_configs.py:smoke` (a tiny BERT, no
download). `tests/test_benchmarks.py` runs it so.
"""

import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks.common import smoke_requested  # noqa: E402
from sft_keras import config as config_lib  # noqa: E402
from sft_keras.data.pipeline import epoch_shuffled_batches, steps_per_epoch  # noqa: E402
from sft_keras.modalities import get_modality  # noqa: E402
from sft_keras.models import find_backbone  # noqa: E402
from sft_keras.run import RunDir  # noqa: E402
from sft_keras.tasks import compile_for_task  # noqa: E402
from sft_keras.training import distribute, optimizers  # noqa: E402
from sft_keras.training.loop import build_callbacks  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path of a config file (configs/*.py, benchmarks/throughput_configs.py:NAME), "
    "as sft-train's --config; overrides such as --config.train.batch_size=64 work the same.")
_SMOKE = flags.DEFINE_bool(
    "smoke", False, "Tiny and quick (also SFT_SMOKE=1): 1 warm-up + 2 timed steps, 1 repeat, "
    "<= 32 examples in batches of <= 8; --config defaults to throughput_configs.py:smoke.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed training steps per variant.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, compilation).")
_PRECISION = flags.DEFINE_enum("precision", None, list(distribute.PRECISIONS),
                               "Overrides runtime.precision.")
_JIT = flags.DEFINE_enum("jit_compile", None, list(distribute.JIT_COMPILE),
                         "Overrides runtime.jit_compile.")
_STRATEGY = flags.DEFINE_string("strategy", None, "Overrides runtime.strategy.")
_PEAK = flags.DEFINE_float("peak_tflops", 989.0, "Peak TFLOP/s of the accelerator(s), for MFU.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per variant, round-robin; best kept.")
_VARIANTS = flags.DEFINE_list("variants", ["hand", "sft_model", "sft_full"], "Which to run.")

VARIANTS = ("hand", "sft_model", "sft_full")
SMOKE_STEPS, SMOKE_EXAMPLES, SMOKE_BATCH = 2, 32, 8

# Forward multiply-accumulates (G) at 224x224 px, as commonly quoted.
IMAGE_GMACS_224 = {"resnet50": 4.1, "resnet50_v2": 4.1, "resnet101": 7.8, "vgg16": 15.5,
                   "vgg19": 19.6, "mobilenet_v2": 0.3, "efficientnet_b0": 0.39}


class StepTimer(keras.callbacks.Callback):
    """Times the training steps after the first `warmup` ones, up to the last of `total`."""

    def __init__(self, warmup, total):
        super().__init__()
        self.warmup, self.total = warmup, total
        self.start = self.end = None

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.warmup - 1:
            self.start = time.perf_counter()
        if batch == self.total - 1:
            self.end = time.perf_counter()


def training_flops_per_example(config, model):
    """Analytic training FLOPs per example, from the backbone's architecture (None if unknown).

    A transformer encoder (keras-hub `transformer_layer_*` blocks): 6 x block
    parameters x tokens + attention; a `keras.applications` CNN: 3 x the
    forward FLOPs quoted at 224 px, scaled by pixel count.
    """
    backbone = find_backbone(model)
    blocks = [layer for layer in backbone.layers if layer.name.startswith("transformer_layer")]
    if blocks:
        params = sum(int(np.prod(w.shape)) for layer in blocks for w in layer.weights)
        tokens = config.data.sequence_length
        return 6 * params * tokens + 12 * len(blocks) * tokens ** 2 * backbone.hidden_dim
    if config.model.backbone in IMAGE_GMACS_224:
        height, width = config.data.image_size
        return (3 * 2 * IMAGE_GMACS_224[config.model.backbone] * 1e9 * height * width / 224 ** 2)
    return None


def cached_dataset(dataset, batch_size):
    """A batched dataset's examples, read once into memory, as a repeated in-memory dataset.

    Whatever the modality's `make_dataset` yields (pixels, a token dict) is
    kept as it comes: the nested structure is concatenated leaf by leaf.
    """
    batches = list(dataset.as_numpy_iterator())
    x, y = tf.nest.map_structure(lambda *parts: np.concatenate(parts), *batches)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache().repeat()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), x, len(y)


def input_shapes(x):
    """The per-example shape of each model input, e.g. `(224, 224, 3)` or a dict of them."""
    return tf.nest.map_structure(lambda a: tuple(a.shape[1:]), x)


def build_compiled(config, strategy, modality, class_names, total_steps):
    """The model as sft-train builds and compiles it (modality, optimizer, compile_for_task)."""
    with strategy.scope(), distribute.precision_policy(config.runtime.precision):
        model = modality.build_model(max(len(class_names), 1))
        optimizer = optimizers.build_optimizer(config.train, model, total_steps=total_steps)
        compile_for_task(model, config, class_names, optimizer,
                         weighted=strategy.num_replicas_in_sync > 1)
        # Built now, the first step traces once instead of twice (an optimizer that makes
        # its variables inside the first trace makes tf.function trace again). Untimed.
        optimizer.build(model.trainable_variables)
    distribute.prepare_for_multi_worker_fit(model, strategy)
    return model


def timed_fit(model, dataset, warmup, steps, callbacks=(), validation=None):
    """Seconds of the `steps` training steps after `warmup` ones, in one epoch of `fit`."""
    timer = StepTimer(warmup, warmup + steps)
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer, *callbacks],
              validation_data=validation, validation_steps=None if validation is None else 1,
              shuffle=False, verbose=0)
    return timer.end - timer.start


def examples_in_steps(num_examples, batch_size, first, count, drop_remainder=False):
    """Examples in steps first..first+count-1 of a stream of epochs, each batched on its own."""
    sizes = [batch_size] * (num_examples // batch_size)
    if num_examples % batch_size and not drop_remainder:
        sizes.append(num_examples % batch_size)
    return sum(sizes[i % len(sizes)] for i in range(first, first + count))


def load_config():
    """The --config (or, with --smoke and no --config, throughput_configs.py:smoke), validated,
    with the command-line overrides and the smoke caps applied."""
    config, smoke = _CONFIG.value, smoke_requested(_SMOKE.value)
    if config is None:
        if not smoke:
            raise app.UsageError("--config is required (or --smoke).")
        from benchmarks import throughput_configs

        config = throughput_configs.get_config("smoke")
    if smoke:
        config.data.max_train_examples = min(config.data.max_train_examples or SMOKE_EXAMPLES,
                                             SMOKE_EXAMPLES)
        config.train.batch_size = min(config.train.batch_size, SMOKE_BATCH)
    if _PRECISION.value:
        config.runtime.precision = _PRECISION.value
    if _JIT.value:
        config.runtime.jit_compile = _JIT.value
    if _STRATEGY.value:
        config.runtime.strategy = _STRATEGY.value
    config, _ = optimizers.resolve_recipe(config_lib.validate_config(config))
    return config, smoke


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, smoke = load_config()
    warmup, steps, repeats = _WARMUP.value, _STEPS.value, _REPEATS.value
    if smoke:
        warmup, steps, repeats = 1, min(steps, SMOKE_STEPS), 1
    if warmup < 1:
        raise app.UsageError("--warmup must be >= 1")
    unknown = [v for v in _VARIANTS.value if v not in VARIANTS]
    if unknown:
        raise app.UsageError(f"Unknown variant(s) {unknown}: use some of {list(VARIANTS)}")
    keras.utils.set_random_seed(config.seed)
    strategy = distribute.get_strategy(config.runtime)
    replicas = strategy.num_replicas_in_sync
    drop_remainder = replicas > 1

    # Data, as the training loop reads it: the modality's dataset, unbatched, then shuffled
    # and batched per epoch (`epoch_shuffled_batches`). Text stays padded to
    # data.sequence_length (no data.length_buckets): the same tensors as `hand`, and what the
    # FLOPs estimate assumes; benchmarks/side_by_side.py measures length buckets.
    modality = get_modality(config)
    data = modality.load_data()
    batch_size = config.train.batch_size
    train_ds = modality.make_dataset(data.train)
    cached, inputs, num_examples = cached_dataset(train_ds, batch_size)
    per_epoch = steps_per_epoch(num_examples, batch_size, replicas)
    full_stream = epoch_shuffled_batches(
        train_ds.unbatch(), batch_size, 0, math.ceil((warmup + steps) / per_epoch),
        seed=config.seed, shuffle_buffer=config.data.shuffle_buffer,
        drop_remainder=drop_remainder)
    print(f"{config.model.backbone} ({config.model.preset or config.model.weights}), "
          f"{num_examples} training examples, batch {batch_size}, "
          f"inputs {input_shapes(inputs)}, "
          f"precision {config.runtime.precision}, jit_compile {config.runtime.jit_compile}, "
          f"{replicas} replica(s) ({type(strategy).__name__}), "
          f"{warmup} warm-up + {steps} timed steps, {repeats} repeat(s)"
          f"{' (smoke: not a measurement)' if smoke else ''}; devices: "
          f"{[d.name for d in tf.config.list_logical_devices() if d.device_type != 'CPU'] or 'CPU'}",
          flush=True)

    total_steps = config.train.epochs * per_epoch  # As the loop's schedules see it.
    models = {variant: build_compiled(config, strategy, modality, data.class_names, total_steps)
              for variant in _VARIANTS.value}
    flops = training_flops_per_example(config, next(iter(models.values())))
    # Round-robin repeats, best of each: a shared machine's noise only slows runs down.
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(repeats):
            for variant, model in models.items():
                if variant == "hand":
                    seconds = timed_fit(model, cached, warmup, steps)
                    examples = steps * batch_size
                else:
                    run_dir = RunDir(os.path.join(workdir, f"{variant}-{repeat}"))
                    dataset = cached if variant == "sft_model" else full_stream
                    seconds = timed_fit(model, dataset, warmup, steps,
                                        build_callbacks(config, run_dir), cached)
                    examples = steps * batch_size if variant == "sft_model" else (
                        examples_in_steps(num_examples, batch_size, warmup, steps,
                                          drop_remainder))
                results[variant] = max(results.get(variant, 0.0), examples / seconds)
                print(f"  {variant}: {examples / seconds:.1f} examples/s", flush=True)

    base = results.get("hand")
    print(f"{'variant':<11} {'examples/s':>11} {'time ratio':>11} {'TFLOP/s':>9} {'MFU':>8}")
    for variant, rate in results.items():
        ratio = f"{base / rate:.3f}" if base else "-"
        tflops = rate * flops / 1e12 if flops else None
        mfu = f"{100 * tflops / _PEAK.value:.3f}%" if flops else "n/a"
        print(f"{variant:<11} {rate:>11.1f} {ratio:>11} "
              f"{(f'{tflops:.3f}' if flops else 'n/a'):>9} {mfu:>8}")
    if flops:
        print(f"training FLOPs/example (estimate): {flops / 1e9:.2f} G; peak {_PEAK.value} TFLOP/s")


if __name__ == "__main__":
    app.run(main)
