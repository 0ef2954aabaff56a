"""Teacher, distilled student and the student trained alone: accuracy, size and CPU latency.

Compares three finished runs on the same data and epochs (`model.distill_from`,
`model.num_layers`; docs/training.md, "Distillation"): validation accuracy
(`metrics.json`), parameters, the size of the latest SavedModel export
(`export/<n>/`), and the median CPU latency at batch 1 of the model in a
`tf.function` on one preprocessed validation example (token ids for text,
pixels for images; `sft_keras.evaluation.exports.keras_predictor`).

Run (from the repository root), on the quickstart:

    python -m sft_keras.cli.train --config=configs/quickstart.py --workdir=/tmp/distill/teacher
    python -m sft_keras.cli.train --config=configs/quickstart.py --workdir=/tmp/distill/student \\
        --config.model.num_layers=3 --config.model.distill_from=/tmp/distill/teacher
    python -m sft_keras.cli.train --config=configs/quickstart.py --workdir=/tmp/distill/alone \\
        --config.model.num_layers=3
    python benchmarks/distill.py --teacher=/tmp/distill/teacher \\
        --student=/tmp/distill/student --alone=/tmp/distill/alone

Or all three runs for each of several seeds, trained by the script itself (each
seed its own teacher: `seed` also draws the train/validation split, so a
teacher of another seed would have trained on this seed's validation examples),
then the table of every run and the mean accuracy of each role:

    python benchmarks/distill.py --config=configs/quickstart.py --seeds=42,43,44 \
        --root=/tmp/distill_seeds

Measured 2026-12-06 with the `--seeds` command (docs/training.md has the
table): mean accuracy teacher 0.9323, distilled 3-layer student 0.9246, the
same student alone 0.9170; student/teacher latency 0.51.

    python benchmarks/distill.py --smoke     # or SFT_SMOKE=1

`--smoke` trains the three runs itself for 1 epoch each (a 2-layer tiny BERT
teacher, 1-layer students, 48 generated sentences; no export) and times 2 calls: a check
that the script works (`tests/test_benchmarks.py` runs it), not a measurement.
Timings on a shared or loaded CPU are noisy; compare rows of one run only.
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import smoke_requested, tiny_bert_preset  # noqa: E402
from sft_keras.files import existing_versions  # noqa: E402
from sft_keras.run import load_run  # noqa: E402


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def measure(workdir, repeats):
    """{accuracy, parameters, export bytes, latency ms} of the finished run in `workdir`."""
    from sft_keras.evaluation.exports import collect_inputs, keras_predictor, latency_ms
    from sft_keras.serving.formats import graph_inputs

    run = load_run(workdir)
    metrics = run.run_dir.read_metrics() or {}
    versions = existing_versions(run.run_dir.export)
    size = (folder_bytes(os.path.join(run.run_dir.export, str(versions[-1])))
            if versions else None)
    data = run.modality.load_data()
    specs = graph_inputs(run.model, run.config.data.sequence_length)
    names = [s.name for s in specs]
    inputs, _ = collect_inputs(run.modality.make_dataset(data.validation, cache=False), names)
    inputs = {s.name: inputs[s.name].astype(s.dtype.as_numpy_dtype) for s in specs}
    predict = keras_predictor(run.model, names, [s.dtype for s in specs])
    return {"accuracy": metrics.get("accuracy"), "parameters": run.model.count_params(),
            "bytes": size, "ms": latency_ms(predict, inputs, repeats=repeats)}


def smoke_runs():
    """Trains a tiny teacher, a distilled 1-layer student and the student alone; their workdirs."""
    import random

    from sft_keras.config import validate_config
    from sft_keras.training import train_and_evaluate

    root = tempfile.mkdtemp(prefix="sft_benchmark_distill_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    rng = random.Random(0)
    path = os.path.join(root, "train.csv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n")
        for i in range(48):
            word, label = [("good", "pos"), ("bad", "neg")][i % 2]
            f.write(f"{' '.join(rng.sample(['a', 'film', 'the', 'plot', 'was'], 3))} {word},"
                    f"{label}\n")
    preset = tiny_bert_preset()
    runs = {}
    for name, model in (("teacher", {}),
                        ("student", {"num_layers": 1}),
                        ("alone", {"num_layers": 1})):
        if name == "student":
            model["distill_from"] = runs["teacher"]
        config = validate_config({
            "data": {"source": "text_file", "path": path, "sequence_length": 16,
                     "validation_split": 0.25},
            "model": {"backbone": "bert", "preset": preset, **model},
            "train": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3},
            "export": {"enabled": False},  # Smoke: no export (its size prints n/a).
        })
        runs[name] = os.path.join(root, name)
        train_and_evaluate(config, runs[name])
    return runs


def seed_runs(config_path, seeds, root, num_layers, student_flags):
    """Trains teacher, distilled student and student alone for each seed with sft-train.

    Returns:
        list of (seed, {role: workdir}); finished runs in `root` are not trained again.
    """
    import subprocess

    runs = []
    for seed in seeds:
        folders = {role: os.path.join(root, f"seed{seed}", role)
                   for role in ("teacher", "student", "alone")}
        flags = {"teacher": [],
                 "student": [f"--config.model.num_layers={num_layers}",
                             f"--config.model.distill_from={folders['teacher']}", *student_flags],
                 "alone": [f"--config.model.num_layers={num_layers}"]}
        for role, workdir in folders.items():
            command = [sys.executable, "-m", "sft_keras.cli.train", f"--config={config_path}",
                       f"--workdir={workdir}", f"--config.seed={seed}", *flags[role]]
            print("Running: " + " ".join(command[2:]), flush=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        runs.append((seed, folders))
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="workdir of the teacher run")
    parser.add_argument("--student", help="workdir of the distilled student run")
    parser.add_argument("--alone", help="workdir of the same student trained without teacher")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--config", help="with --seeds: the config the runs train")
    parser.add_argument("--seeds", default="", help="e.g. 42,43,44: train every run per seed")
    parser.add_argument("--root", default="/tmp/distill_seeds", help="with --seeds: workdirs")
    parser.add_argument("--num_layers", type=int, default=3, help="with --seeds: student layers")
    parser.add_argument("--student_flag", action="append", default=[],
                        help="with --seeds: an extra sft-train flag of the distilled student, "
                        "e.g. --student_flag=--config.train.distill_temperature=4")
    args = parser.parse_args()
    if args.seeds and not smoke_requested(args.smoke):
        if not args.config:
            parser.error("--seeds needs --config")
        seeds = [int(s) for s in args.seeds.split(",")]
        per_seed = seed_runs(args.config, seeds, args.root, args.num_layers, args.student_flag)
        print(f"{'seed':<6} {'run':<8} {'accuracy':>9} {'parameters':>12} {'export MB':>10} "
              f"{'latency ms':>11}")
        table = {}
        for seed, folders in per_seed:
            for role, path in folders.items():
                r = table.setdefault(role, [])
                r.append(measure(path, args.repeats))
                m = r[-1]
                print(f"{seed:<6} {role:<8} {m['accuracy']:>9.4f} {m['parameters']:>12,} "
                      f"{m['bytes'] / 1e6:>10.2f} {m['ms']:>11.2f}", flush=True)
        means = {role: sum(m["accuracy"] for m in rows) / len(rows) for role, rows in table.items()}
        ms = {role: sorted(m["ms"] for m in rows)[len(rows) // 2] for role, rows in table.items()}
        print("mean accuracy: " + ", ".join(f"{role} {value:.4f}" for role, value in means.items()))
        print(f"student/teacher latency ratio (medians): {ms['student'] / ms['teacher']:.2f}")
        return
    if smoke_requested(args.smoke):
        runs, repeats = smoke_runs(), 2
    else:
        if not (args.teacher and args.student and args.alone):
            parser.error("--teacher, --student and --alone are required (or --smoke)")
        runs, repeats = {"teacher": args.teacher, "student": args.student,
                         "alone": args.alone}, args.repeats
    rows = {name: measure(path, repeats) for name, path in runs.items()}
    print(f"Median of {repeats} calls at batch 1 after 3 warm-up calls; accuracy on the "
          "validation split.")
    print(f"{'run':<8} {'accuracy':>9} {'parameters':>12} {'export MB':>10} {'latency ms':>11}")
    for name, r in rows.items():
        size = "n/a" if r["bytes"] is None else f"{r['bytes'] / 1e6:.2f}"
        accuracy = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        print(f"{name:<8} {accuracy:>9} {r['parameters']:>12,} {size:>10} {r['ms']:>11.2f}")
    print(f"student/teacher latency ratio: {rows['student']['ms'] / rows['teacher']['ms']:.2f}; "
          f"parameters ratio: {rows['student']['parameters'] / rows['teacher']['parameters']:.2f}")


if __name__ == "__main__":
    main()
