"""Training throughput: the sft_keras path vs. a hand-written fit on cached tensors.

Measures examples/second of training steps (after warm-up steps, which
include tracing and XLA compilation), side by side in one process:

  hand        the same model (same builder, optimizer, loss, metrics,
              jit_compile) fit by hand on the training inputs pre-decoded /
              pre-tokenized and cached in memory
              (`Dataset.from_tensor_slices(...).cache().repeat()`), no callbacks;
  sft_model   the sft_keras model path: as `train.py` fits (its callbacks:
              checkpoints, TensorBoard, CSV log, early stopping) on the same
              cached tensors;
  sft_full    the full sft_keras path: the config's own tf.data pipeline
              (decode / tokenize, cache, shuffle, batch, prefetch) + model +
              compile + fit with train.py's callbacks.

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
    # GPU: bf16 + XLA, every local GPU
    python benchmarks/throughput.py --config=configs/quickstart.py \\
        --precision=mixed_bfloat16 --jit_compile=true --strategy=auto --config.train.batch_size=256
"""

import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from sft_keras import backbones  # noqa: E402
from sft_keras.training import distribute
from sft_keras.training import optimizers
from sft_keras.training import loop as train
from sft_keras import config as config_lib  # noqa: E402
from sft_keras.tasks import get_task  # noqa: E402

_CONFIG = train._CONFIG  # noqa: SLF001 (sft-train's --config flag, same syntax)
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

# Forward multiply-accumulates (G) at 224x224 px, as commonly quoted.
IMAGE_GMACS_224 = {"resnet50": 4.1, "resnet50_v2": 4.1, "resnet101": 7.8, "vgg16": 15.5,
                   "vgg19": 19.6, "mobilenet_v2": 0.3, "efficientnet_b0": 0.39}


class StepTimer(keras.callbacks.Callback):
    """Times the training steps after the first `warmup` ones."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup = warmup
        self.start = self.end = None

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.warmup - 1:
            self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.end = time.perf_counter()


def training_flops_per_example(config, model):
    """Analytic training FLOPs per example (None when unknown)."""
    name = config.model.backbone
    if backbones.get_backbone_spec(name).modality == "text":
        backbone = model.get_layer("bert_backbone") if any(
            layer.name == "bert_backbone" for layer in model.layers) else None
        if backbone is None:
            return None
        params = sum(int(np.prod(w.shape)) for layer in backbone.layers
                     if layer.name.startswith("transformer_layer") for w in layer.weights)
        tokens = config.data.sequence_length
        return 6 * params * tokens + 12 * backbone.num_layers * tokens ** 2 * backbone.hidden_dim
    if name in IMAGE_GMACS_224:
        height, width = config.data.image_size
        return 3 * 2 * IMAGE_GMACS_224[name] * 1e9 * height * width / 224 ** 2
    return None


def cached_dataset(train_ds, batch_size):
    """The training inputs, decoded/tokenized once, as in-memory tensors repeated."""
    xs, ys = [], []
    for x, y in train_ds:
        xs.append(x)
        ys.append(y.numpy())
    if isinstance(xs[0], dict):
        x = {k: np.concatenate([b[k].numpy() for b in xs]) for k in xs[0]}
    else:
        x = np.concatenate([b.numpy() for b in xs])
    y = np.concatenate(ys)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache().repeat()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), len(y)


def build_compiled(config, strategy, build_model, num_classes):
    task = get_task(config.task)
    with strategy.scope(), distribute.precision_policy(config.runtime.precision):
        model = build_model(num_classes)
        model.compile(optimizer=optimizers.build_optimizer(config.train), loss=task.loss(),
                      metrics=task.metrics(), jit_compile=distribute.jit_compile_arg(config.runtime))
    distribute.prepare_for_multi_worker_fit(model, strategy)
    return model


def timed_fit(model, dataset, callbacks, warmup, steps):
    timer = StepTimer(warmup)
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer, *callbacks],
              shuffle=False, verbose=0)
    return timer.end - timer.start


def examples_in_steps(num_examples, batch_size, first, count):
    """Examples in steps first..first+count-1 of a repeated dataset batched per epoch."""
    sizes = [batch_size] * (num_examples // batch_size)
    if num_examples % batch_size:
        sizes.append(num_examples % batch_size)
    return sum(sizes[i % len(sizes)] for i in range(first, first + count))


def main(argv):
    del argv
    config = _CONFIG.value
    if _PRECISION.value:
        config.runtime.precision = _PRECISION.value
    if _JIT.value:
        config.runtime.jit_compile = _JIT.value
    if _STRATEGY.value:
        config.runtime.strategy = _STRATEGY.value
    config = config_lib.validate_config(config)
    keras.utils.set_random_seed(config.seed)
    strategy = distribute.get_strategy(config.runtime)
    modality = backbones.get_backbone_spec(config.model.backbone).modality
    inputs = train._image_inputs if modality == "image" else train._text_inputs  # noqa: SLF001
    data, train_ds, _, build_model, _ = inputs(config)
    num_classes = max(len(data.class_names), 1)
    batch_size, warmup, steps = config.train.batch_size, _WARMUP.value, _STEPS.value
    if warmup < 1:
        raise app.UsageError("--warmup must be >= 1")
    cached, num_examples = cached_dataset(train_ds, batch_size)
    print(f"{config.model.backbone} ({config.model.preset or config.model.weights}), "
          f"{num_examples} training examples, batch {batch_size}, "
          f"{'seq ' + str(config.data.sequence_length) if modality == 'text' else config.data.image_size}, "
          f"precision {config.runtime.precision}, jit_compile {config.runtime.jit_compile}, "
          f"{strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), "
          f"{warmup} warm-up + {steps} timed steps; devices: "
          f"{[d.name for d in tf.config.list_logical_devices() if d.device_type != 'CPU'] or 'CPU'}",
          flush=True)

    models, flops = {}, None
    for variant in _VARIANTS.value:
        if variant not in ("hand", "sft_model", "sft_full"):
            raise app.UsageError(f"Unknown variant {variant!r}")
        models[variant] = build_compiled(config, strategy, build_model, num_classes)
        flops = flops or training_flops_per_example(config, models[variant])
    # Round-robin repeats, best of each: a shared machine's noise only slows runs down.
    results = {}
    with tempfile.TemporaryDirectory() as workdir, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EarlyStopping: no val_* metrics without validation.
        for _ in range(_REPEATS.value):
            for variant, model in models.items():
                if variant == "hand":
                    seconds = timed_fit(model, cached, [], warmup, steps)
                    examples = steps * batch_size
                else:
                    callbacks = train.build_callbacks(config, os.path.join(workdir, variant))
                    dataset = cached if variant == "sft_model" else train_ds.repeat()
                    seconds = timed_fit(model, dataset, callbacks, warmup, steps)
                    examples = steps * batch_size if variant == "sft_model" else (
                        examples_in_steps(num_examples, batch_size, warmup, steps))
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
    flags.mark_flags_as_required(["config"])
    app.run(main)
