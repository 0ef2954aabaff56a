"""Evaluate a trained run again, on its validation split or on new data (`sft-eval`).

The model is rebuilt from `<workdir>/config.json` and `labels.txt` and gets
the checkpoint's weights (`best` by default). Without `--data` it is scored on
the run's validation split (rebuilt from the config, with the same seed) or
`--split=train`, and the report goes to `<workdir>/report/`
(`report_train/` for the training split). With `--data` it is scored on a
file or folder of the same kind as the training data (a folder of class
subfolders, an image CSV manifest, a CSV/TSV/JSONL text file) whose labels
are mapped through `labels.txt`, and the report goes to
`<workdir>/report_<name>/`, `<name>` being the file or folder name without
extension.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from sft_keras.errors import ConfigError, DataError  # noqa: E402

SPLITS = ("validation", "train")
CHECKPOINTS = ("best", "last")


def _load_run_config(workdir, data_path):
    """The run's validated config; with `data_path`, its data keys point at that data."""
    from sft_keras import backbones
    from sft_keras import config as config_lib

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(
            f"{path} not found: --workdir must be a folder written by sft-train. "
            f"Received: --workdir={workdir!r}"
        )
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    modality = backbones.get_backbone_spec(raw["model"]["backbone"]).modality
    if modality == "image":
        raw["model"]["weights"] = None  # The checkpoint holds every weight; no download.
    if data_path is not None:
        if not os.path.exists(data_path):
            raise DataError(f"--data does not exist. Received: --data={data_path!r}")
        folder = os.path.isdir(data_path)
        if modality == "image":
            source = "image_folder" if folder else "csv"
        else:
            source = "text_folder" if folder else "text_file"
        raw["data"].update(source=source, path=data_path, validation_path="")
    return config_lib.validate_config(raw)


def _read_labels(workdir, task):
    path = os.path.join(workdir, "labels.txt")
    if not os.path.isfile(path):
        raise DataError(f"{path} not found: --workdir must be a folder written by sft-train.")
    with open(path, encoding="utf-8") as f:
        names = [line.rstrip("\n") for line in f]
    if task != "regression" and not names:
        raise DataError(f"{path} is empty, but task={task!r} needs its class names.")
    return names


def _read_data(config, class_names, data_path):
    """The examples of `--data` (labels through `class_names`), read as training data is."""
    from sft_keras import data as data_lib

    d, known = config.data, (class_names or None)
    if d.source == "image_folder":
        examples = data_lib.read_image_folder(data_path, known, d.skip_unknown_files)
    elif d.source == "csv":
        examples = data_lib.read_csv_manifest(
            data_path, d.path_column, d.label_column, config.task, known
        )
    elif d.source == "text_folder":
        examples = data_lib.read_text_folder(data_path, known)
    else:
        examples = data_lib.read_text_table(
            data_path, tuple(d.text_columns), d.label_column, config.task, known
        )
    if hasattr(examples, "images") and d.validate_images:
        data_lib.check_images_decode(examples.images)
    return examples


def _read_split(config, class_names, split, modality):
    from sft_keras import data as data_lib

    load = data_lib.load_image_data if modality == "image" else data_lib.load_text_data
    data = load(config.data, config.task, config.seed)
    if list(data.class_names) != list(class_names):
        raise DataError(
            f"The run's data (data.source={config.data.source!r}, data.path={config.data.path!r}) "
            f"now has classes {list(data.class_names)}, "
            f"but the run was trained on {list(class_names)} (labels.txt). "
            f"Pass the data to score with --data."
        )
    return data.train if split == "train" else data.validation


def _dataset_and_model(config, examples, num_classes, modality):
    """A batched, unshuffled dataset of `examples` and an uncompiled model, as in training."""
    from sft_keras import backbones, models
    from sft_keras import data as data_lib

    if modality == "image":
        dataset = data_lib.make_image_dataset(
            examples, config.data.image_size, config.train.batch_size, task=config.task,
            training=False, cache=False,
        )
        return dataset, models.build_image_model(config, num_classes)
    name, preset = config.model.backbone, config.model.preset
    tokenizer = backbones.load_text_tokenizer(name, preset)
    preprocessor = backbones.make_preprocessor(tokenizer, config.data.sequence_length)
    dataset = data_lib.make_text_dataset(
        examples, preprocessor, config.train.batch_size, task=config.task, training=False,
        cache=False,
    )
    return dataset, models.build_text_model(config, backbones.build_text_backbone(name, preset),
                                            num_classes)


def evaluate_workdir(workdir, split="validation", data_path=None, checkpoint="best",
                     num_worst=20):
    """Rebuilds a trained run's model and writes an evaluation report; returns the metrics.

    Args:
        workdir: str. A folder written by `sft-train` (`config.json`,
            `labels.txt`, `checkpoints/`).
        split: str, default "validation". `"validation"` or `"train"`: the
            run's split, rebuilt from its config (same data, same seed).
            Ignored when `data_path` is given.
        data_path: str or None. A file or folder of the same kind as the
            training data to score instead; a label not in `labels.txt` is a
            `DataError` naming the file and line.
        checkpoint: str, default "best". `"best"` or `"last"`.
        num_worst: int, default 20. Lines of `misclassified.jsonl`.

    Returns:
        dict: the metrics, plus `report_dir`.

    Example:

    >>> metrics = evaluate_workdir("/tmp/sft_digits")  # doctest: +SKIP
    >>> metrics["accuracy"], metrics["report_dir"]  # doctest: +SKIP
    (0.978, '/tmp/sft_digits/report')
    """
    import keras

    from sft_keras import backbones
    from sft_keras.evaluation import report as evaluate
    from sft_keras.tasks import read_tuned_thresholds, task_from_config

    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {SPLITS}. Received: --split={split!r}")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(
            f"--checkpoint must be one of {CHECKPOINTS}. Received: --checkpoint={checkpoint!r}"
        )
    config = _load_run_config(workdir, data_path)
    class_names = _read_labels(workdir, config.task)
    weights = os.path.join(workdir, "checkpoints", f"{checkpoint}.weights.h5")
    if not os.path.isfile(weights):
        raise ConfigError(f"Checkpoint {weights} not found. Received: --checkpoint={checkpoint!r}")
    modality = backbones.get_backbone_spec(config.model.backbone).modality

    if data_path is not None:
        examples = _read_data(config, class_names, data_path)
        name = os.path.splitext(os.path.basename(os.path.normpath(data_path)))[0]
        report_dir, split_name = os.path.join(workdir, f"report_{name}"), data_path
    else:
        examples = _read_split(config, class_names, split, modality)
        report_dir = os.path.join(workdir, "report" if split == "validation" else f"report_{split}")
        split_name = split
    if len(examples) == 0:
        raise DataError(f"No examples to evaluate in {split_name!r}.")

    keras.utils.set_random_seed(config.seed)
    dataset, model = _dataset_and_model(config, examples, max(len(class_names), 1), modality)
    try:
        model.load_weights(weights)
    except ValueError as e:  # Keras: layer or shape mismatch.
        raise ConfigError(
            f"Checkpoint {weights} does not fit the model built from {workdir}/config.json "
            f"and labels.txt ({len(class_names)} classes): "
            + " ".join(str(e).splitlines()[:3])[:400]  # Keras appends whole weight arrays.
        ) from None
    # Multilabel: the run's thresholds (tuned ones from report/thresholds.json).
    task = task_from_config(config, class_names, tuned=read_tuned_thresholds(workdir))
    model.compile(loss=task.loss(), metrics=task.metrics())
    threshold = task.label_thresholds(len(class_names)) if config.task == "multilabel" else 0.5
    metrics = evaluate.write_report(
        model, dataset, examples, class_names, config.task, report_dir, split_name,
        training_log=os.path.join(workdir, "training_log.csv"), num_worst=num_worst,
        threshold=threshold,
    )
    metrics["report_dir"] = report_dir
    return metrics
