"""BatchNorm when the target images differ from the pretraining ones: frozen, trainable, AdaBN.

A small image transfer task, with sft_keras's own Python API: scikit-learn's
8x8 digits, upscaled to 32x32 PNG folders. `small_cnn` (three conv blocks,
each with BatchNorm) is pretrained on digits 0-4 (every image, 10% held out
for validation); then its backbone weights (`model.weights`) are fine-tuned
on 100 labelled images of the other task, digits 5-9 (20 per class), four
ways, and scored on every other image of 5-9 (the held-out validation set):

- `frozen`: `model.freeze.batchnorm=True` (the default: pretrained statistics).
- `trainable`: `model.freeze.batchnorm=False` (statistics follow the batches).
- `adabn`: `model.freeze.adabn=True` with `model.freeze.batchnorm=True`
  (statistics re-estimated on the 100 training images, then frozen).
- `scratch`: the same CNN from random weights, BatchNorm trainable.

Each runs with 3 seeds (`seed`: the head's initialisation and the batch
order; the pretrained backbone is the same). The accuracy is the last
epoch's (`checkpoints/last.weights.h5`), so no setting picks its epoch on
the held-out images.

Run (from the repository root):

    nice -n 10 python benchmarks/batchnorm_transfer.py

    python benchmarks/batchnorm_transfer.py --smoke     # or SFT_SMOKE=1

Result (CPU, 2 cores shared with another benchmark; 6 pretraining epochs
(validation accuracy 1.000), 15 fine-tuning epochs at batch 16, Adam 1e-3 with
cosine decay; 796 held-out images; 175 s):

    setting     mean accuracy  per seed
    frozen      0.784          0.572 0.892 0.888
    trainable   0.952          0.940 0.960 0.957
    adabn       0.807          0.616 0.907 0.897
    scratch     0.947          0.942 0.951 0.947

Other runs of the same script (same machine, 165-180 s each):

- `--schedule=constant` (Adam 1e-3 throughout): frozen 0.809, trainable
  0.890, adabn 0.832, scratch 0.867.
- `--invert_target` (digits 5-9 dark on light: another domain as well):
  frozen 0.755, trainable 0.956, adabn 0.679 (0.417 0.834 0.785), scratch 0.952.
- `--invert_target --head_only` (only the head trains): frozen 0.303,
  adabn 0.318, scratch 0.952 (trainable is frozen here: the backbone is).
- `--learning_rate=1e-4` (15 epochs are too few there): frozen 0.611,
  trainable 0.634, adabn 0.634, scratch 0.646; with `--invert_target`: 0.558,
  0.614, 0.594, 0.575.

On this task AdaBN moves the mean accuracy by -0.08 to +0.04 over frozen
statistics, within the spread of the seeds (seed 0 collapses with frozen
statistics, AdaBN or not); at learning rate 1e-3, trainable statistics (or the
whole CNN from scratch) win by 0.08 to 0.20: 100 labelled images are enough
for this small CNN.

`--smoke` uses 10 images per pretraining class, 4 per target class, 1 epoch
and 1 seed: a check that the script works (`tests/test_benchmarks.py` runs
it), not a measurement.
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import smoke_requested  # noqa: E402

PRETRAIN_CLASSES, TARGET_CLASSES = range(0, 5), range(5, 10)

# name -> the model.freeze (and model.weights) of that fine-tuning run.
SETTINGS = {
    "frozen": {"batchnorm": True, "adabn": False, "pretrained": True},
    "trainable": {"batchnorm": False, "adabn": False, "pretrained": True},
    "adabn": {"batchnorm": True, "adabn": True, "pretrained": True},
    "scratch": {"batchnorm": False, "adabn": False, "pretrained": False},
}


def write_digit_folders(root, pretrain_per_class, train_per_class, held_out_per_class, seed=0,
                        invert_target=False):
    """Writes 32x32 PNG folders of digits; returns (pretrain, target train, held out) paths.

    `invert_target`: the target task's digits (5-9) are dark on light, a change of domain.
    """
    import numpy as np
    import tensorflow as tf

    from sft_keras.data.images import load_digits

    digits = load_digits()
    rng = np.random.RandomState(seed)
    folders = {name: os.path.join(root, name) for name in ("pretrain", "train", "held_out")}
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.labels == label))
        if label in PRETRAIN_CLASSES:
            parts = {"pretrain": indices[:pretrain_per_class]}
        else:
            parts = {"train": indices[:train_per_class],
                     "held_out": indices[train_per_class:train_per_class + held_out_per_class]}
        for name, chosen in parts.items():
            folder = os.path.join(folders[name], str(label))
            os.makedirs(folder, exist_ok=True)
            images = tf.image.resize(digits.images[chosen].astype("float32"), (32, 32))
            if invert_target and label in TARGET_CLASSES:
                images = 255.0 - images
            for i, image in zip(chosen, images):
                png = tf.io.encode_png(tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8))
                with open(os.path.join(folder, f"{i:04d}.png"), "wb") as f:
                    f.write(png.numpy())
    return folders["pretrain"], folders["train"], folders["held_out"]


def base_config(epochs, seed, schedule="constant", learning_rate=1e-3):
    from sft_keras.config import get_default_config

    config = get_default_config()
    config.seed, config.train.schedule = seed, schedule
    config.train.learning_rate = learning_rate
    config.data.source, config.data.image_size = "image_folder", (32, 32)
    config.model.backbone = "small_cnn"
    config.train.epochs, config.train.batch_size = epochs, 16
    config.train.early_stopping_patience = 0
    config.export.enabled = False
    return config


def pretrain(path, workdir, epochs):
    """Trains small_cnn on `path`; returns the path of its backbone's weights file."""
    from sft_keras.models import find_backbone
    from sft_keras.run import load_run
    from sft_keras.training import train_and_evaluate

    config = base_config(epochs, seed=0)
    config.data.path, config.data.validation_split = path, 0.1
    config.model.freeze.batchnorm = False  # From scratch: the statistics must train.
    metrics = train_and_evaluate(config, workdir)
    weights = os.path.join(workdir, "backbone.weights.h5")
    find_backbone(load_run(workdir, checkpoint="last").model).save_weights(weights)
    print(f"pretrained on digits 0-4: validation accuracy {metrics['accuracy']:.3f}", flush=True)
    return weights


def fine_tune(setting, weights, train_path, held_out_path, workdir, epochs, seed, schedule,
              learning_rate, head_only=False):
    """The last epoch's held-out accuracy of one fine-tuning run."""
    import numpy as np

    from sft_keras.run import load_run
    from sft_keras.training import train_and_evaluate

    choice = SETTINGS[setting]
    config = base_config(epochs, seed, schedule, learning_rate)
    config.data.path, config.data.validation_path = train_path, held_out_path
    config.model.weights = weights if choice["pretrained"] else None
    config.model.freeze.batchnorm = choice["batchnorm"]
    config.model.freeze.adabn = choice["adabn"]
    # Head only: the pretrained backbone (BatchNorm included) stays as it is.
    config.model.freeze.backbone = head_only and choice["pretrained"]
    train_and_evaluate(config, workdir)
    run = load_run(workdir, checkpoint="last")
    held_out = run.modality.read_examples(held_out_path, run.class_names)
    predictions = run.model.predict(run.modality.make_dataset(held_out, cache=False), verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == held_out.labels))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="Tiny data, 1 epoch, 1 seed.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain_epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=15, help="Fine-tuning epochs.")
    parser.add_argument("--schedule", default="cosine",
                        help="Fine-tuning train.schedule (the last epoch is scored).")
    parser.add_argument("--learning_rate", type=float, default=1e-3,
                        help="Fine-tuning peak learning rate (Adam).")
    parser.add_argument("--head_only", action="store_true",
                        help="Fine-tune only the head on the pretrained backbone (model.freeze."
                             "backbone; BatchNorm then stays frozen in 'trainable' too).")
    parser.add_argument("--invert_target", action="store_true",
                        help="Target digits dark on light: another image domain as well.")
    parser.add_argument("--workdir", default=None, help="Default: a temporary folder.")
    args = parser.parse_args(argv)
    smoke = smoke_requested(args.smoke)
    if smoke:
        args.seeds, args.pretrain_epochs, args.epochs = 1, 1, 1
    sizes = (10, 4, 10) if smoke else (1000, 20, 1000)  # Per class: pretrain, train, held out.

    start = time.time()
    root = args.workdir or tempfile.mkdtemp(prefix="sft_benchmark_batchnorm_")
    if not args.workdir:
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    pretrain_path, train_path, held_out_path = write_digit_folders(
        root, *sizes, invert_target=args.invert_target)
    held_out = sum(len(files) for _, _, files in os.walk(held_out_path))
    weights = pretrain(pretrain_path, os.path.join(root, "pretrain"), args.pretrain_epochs)
    results = {}
    for setting in SETTINGS:
        results[setting] = [
            fine_tune(setting, weights, train_path, held_out_path,
                      os.path.join(root, f"{setting}_seed{seed}"), args.epochs, seed,
                      args.schedule, args.learning_rate, args.head_only)
            for seed in range(args.seeds)
        ]
        print(f"{setting}: {results[setting]}", flush=True)

    print(f"\nsmall_cnn pretrained on digits 0-4 ({args.pretrain_epochs} epochs), fine-tuned on "
          f"{5 * sizes[1]} images of 5-9{' (inverted)' if args.invert_target else ''}"
          f"{', head only' if args.head_only else ''} ({args.epochs} epochs, batch 16, "
          f"{args.schedule} learning rate {args.learning_rate:g}); accuracy on "
          f"{held_out} held-out images, last epoch, {args.seeds} seeds")
    print(f"{'setting':<11} {'mean accuracy':<14} per seed")
    for setting, accuracies in results.items():
        mean = sum(accuracies) / len(accuracies)
        print(f"{setting:<11} {mean:<14.3f} {' '.join(f'{a:.3f}' for a in accuracies)}")
    print(f"wall time: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
