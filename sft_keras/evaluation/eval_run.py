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

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from sft_keras.errors import ConfigError, DataError  # noqa: E402
from sft_keras.run import CHECKPOINTS  # noqa: E402

SPLITS = ("validation", "train")


def _split_examples(run, split):
    """The run's `split`, rebuilt from its config (same data, same seed)."""
    data = run.modality.load_data()
    if list(data.class_names) != list(run.class_names):
        d = run.config.data
        raise DataError(
            f"The run's data (data.source={d.source!r}, data.path={d.path!r}) now has classes "
            f"{list(data.class_names)}, but the run was trained on {list(run.class_names)} "
            "(labels.txt). Pass the data to score with --data."
        )
    return data.train if split == "train" else data.validation


def evaluate_workdir(workdir, split="validation", data_path=None, checkpoint="best",
                     num_worst=20):
    """Rebuilds a trained run (`sft_keras.run.load_run`) and writes an evaluation report.

    The model is compiled as in training (the loss includes
    `train.label_smoothing`; multilabel metrics use the run's thresholds),
    and `--data` is read as the training data was (columns, label separator,
    image checks), its labels mapped through `labels.txt`.

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

    from sft_keras.evaluation import report
    from sft_keras.run import load_run

    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {SPLITS}. Received: --split={split!r}")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(
            f"--checkpoint must be one of {CHECKPOINTS}. Received: --checkpoint={checkpoint!r}"
        )
    if data_path is not None and not os.path.exists(data_path):
        raise DataError(f"--data does not exist. Received: --data={data_path!r}")
    run = load_run(workdir, checkpoint)
    if data_path is not None:
        examples = run.modality.read_examples(data_path, run.class_names)
        name = os.path.splitext(os.path.basename(os.path.normpath(data_path)))[0]
        report_dir, split_name = run.run_dir.report_dir(name), data_path
    else:
        examples = _split_examples(run, split)
        report_dir, split_name = run.run_dir.report_dir(split), split
    if len(examples) == 0:
        raise DataError(f"No examples to evaluate in {split_name!r}.")

    keras.utils.set_random_seed(run.config.seed)
    threshold = (run.task.label_thresholds(len(run.class_names))
                 if run.config.task == "multilabel" else 0.5)
    dataset = run.modality.make_dataset(examples, cache=False)
    metrics = run.modality.evaluate(run.model, dataset, examples, report_dir,
                                    run.run_dir.training_log, split_name)  # Own report, or None.
    if metrics is None:
        metrics = report.write_report(
            run.model, dataset, examples, run.class_names, run.config.task, report_dir,
            split_name, training_log=run.run_dir.training_log, num_worst=num_worst,
            threshold=threshold,
        )
    metrics["report_dir"] = report_dir
    return metrics
