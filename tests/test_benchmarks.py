"""Every script in benchmarks/ runs in smoke mode and prints its table, so none can rot.

(benchmarks/common.py, the helpers the scripts share, runs through every script below.)

Smoke mode (`--smoke`, or `SFT_SMOKE=1`) is a tiny model for a step or two
with no download. These tests check that each script exits 0 and prints the
structure of its result, never a speed: speed targets belong in benchmarks/.
The scripts run two at a time (each is mostly single-threaded imports and
graph tracing; more at once on 2 cores only adds TF thread contention), in
fresh processes, from the repository root.
"""

import concurrent.futures
import importlib.util
import os
import re

import pytest

from helpers import REPO_ROOT, run_cli

NUMBER = r"-?\d[\d,]*(?:\.\d+)?"

# name -> (command, environment, regular expressions the output must match, one line each)
SCRIPTS = {
    "throughput_text": (
        ["python", "benchmarks/throughput.py", "--smoke"], {},
        [r"^bert \(.*\), 32 training examples, batch 8, inputs \{.*'token_ids': \(16,\).*"
         r"1 warm-up \+ 2 timed steps",
         r"^variant\s+examples/s\s+time ratio\s+TFLOP/s\s+MFU$",
         *(rf"^{v}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}%$"
           for v in ("hand", "sft_model", "sft_full")),
         rf"^training FLOPs/example \(estimate\): {NUMBER} G"],
    ),
    "throughput_image": (
        ["python", "benchmarks/throughput.py", "--smoke",
         "--config=benchmarks/throughput_configs.py:small_cnn", "--variants=hand,sft_full"], {},
        [r"^small_cnn \(None\), 32 training examples, batch 8, inputs \(32, 32, 3\)",
         r"^variant\s+examples/s\s+time ratio\s+TFLOP/s\s+MFU$",
         *(rf"^{v}\s+{NUMBER}\s+{NUMBER}\s+n/a\s+n/a$" for v in ("hand", "sft_full"))],
    ),
    "distill": (
        ["python", "benchmarks/distill.py", "--smoke"], {},
        [r"^run\s+accuracy\s+parameters\s+export MB\s+latency ms$",
         *(rf"^{r}\s+{NUMBER}\s+{NUMBER}\s+n/a\s+{NUMBER}$"  # Smoke runs do not export.
           for r in ("teacher", "student", "alone")),
         rf"^student/teacher latency ratio: {NUMBER}; parameters ratio: {NUMBER}$"],
    ),
    "lora_step_time": (
        ["python", "benchmarks/lora_step_time.py", "--smoke"], {},
        [rf"^full: {NUMBER} trainable of {NUMBER} parameters$",
         rf"^lora8: {NUMBER} trainable of {NUMBER} parameters$",
         *(rf"^{v}: median {NUMBER} ms/step over 1 steps \(batch 8, 16 tokens\)"
           for v in ("full", "lora8")),
         r"^LoRA rank 8, .* on \d+ layers \(query, value\)"],
    ),
    "serving_latency": (
        ["python", "benchmarks/serving_latency.py", "--smoke"], {},
        [r"^Model: tiny BERT .*, sequence_length=32, median of 2 calls after 1 warm-up",
         r"^path\s+batch\s+median ms\s+ms/example$",
         *(rf"^\({c}\) .*\s+{b}\s+{NUMBER}\s+{NUMBER}$" for b in (1, 32) for c in "abc")],
    ),
    "chatbot_latency": (
        ["python", "benchmarks/chatbot_latency.py", "--smoke"], {},
        [r"^Model: tiny BERT \(2 layers\), sequence_length=32, dim=16, batch 1, top 5, median of 2",
         r"^\s+bank\s+reply ms\s+search ms$",
         *(rf"^\s+{b}\s+{NUMBER}\s+{NUMBER}$" for b in ("100", "1,000"))],
    ),
    "side_by_side": (  # Torch and transformers are benchmark-only: CI skips that column.
        ["python", "benchmarks/side_by_side.py", "--smoke"], {},
        [r"^SST-2 budget run \(smoke: tiny BERT, generated data\): first 64 training sentences",
         r"^hf_trainer: skipped: .* cannot import torch, transformers and accelerate"
         r"|^hf_trainer: done in",
         r"^\| variant \| train s \| train examples/s \| dev accuracy \| total s \|",
         *(rf"^\| {v} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER}/{NUMBER} \|$"
           for v in ("sft_padded", "sft_bucketed", "sft_auto", "keras_hub",
                     "keras_hub_defaults"))],
    ),
    "quickstart_linear_probe": (  # Smoke mode from the environment, as the notebooks get it.
        ["python", "benchmarks/quickstart_linear_probe.py"], {"SFT_SMOKE": "1"},
        [r"^train=64 validation=\d+ classes=\[.*'ai'.*\]$",
         rf"^majority-class accuracy: {NUMBER}$",
         rf"^linear probe accuracy:\s+{NUMBER}\s+\(\d+ s\)"],
    ),
    "sst2_search": (
        ["python", "benchmarks/sst2_search.py", "--smoke"], {},
        [r"^SST-2 budget search \(smoke: tiny BERT, generated data\): first 64 training "
         r"sentences, 1 epoch, sequence length 32, 2 TPE trials",
         rf"^recipe: dev accuracy {NUMBER} in {NUMBER} s$",
         rf"^default_recipe: dev accuracy {NUMBER} in {NUMBER} s$",
         rf"^keras_hub_defaults: dev accuracy {NUMBER} in {NUMBER} s$",
         r"^\| run \| dev accuracy \| wall s \| recipe \|$",
         rf"^\| search \(best trial\) \| {NUMBER} \| {NUMBER} \| trial_\d+_.*\|$",
         rf"^Search: 2 trials, \d+ pruned, {NUMBER} min wall time"],
    ),
    "batchnorm_transfer": (
        ["python", "benchmarks/batchnorm_transfer.py", "--smoke"], {},
        [rf"^pretrained on digits 0-4: validation accuracy {NUMBER}$",
         r"^small_cnn pretrained on digits 0-4 \(1 epochs\), fine-tuned on 20 images of 5-9 .*"
         r"accuracy on 50 held-out images, last epoch, 1 seeds$",
         r"^setting\s+mean accuracy\s+per seed$",
         *(rf"^{s}\s+{NUMBER}\s+{NUMBER}$" for s in ("frozen", "trainable", "adabn", "scratch")),
         rf"^wall time: {NUMBER} s$"],
    ),
}


@pytest.fixture(scope="module")
def smoke_runs(request):
    """Runs the selected tests' scripts, two at a time; returns name -> CompletedProcess."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_benchmark_smoke_prints_its_table"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(run_cli, SCRIPTS[name][0], env=SCRIPTS[name][1],
                                     timeout=300)
                   for name in SCRIPTS if name in selected}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_benchmark_smoke_prints_its_table(name, smoke_runs):
    command, _, patterns = SCRIPTS[name]
    result = smoke_runs[name]
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{output[-3000:]}"
    missing = [p for p in patterns if not re.search(p, result.stdout, flags=re.M)]
    assert not missing, f"{' '.join(command)} printed no line matching {missing}:\n{result.stdout}"


def test_throughput_configs_validate():
    """Every named config of benchmarks/throughput_configs.py is a valid sft_keras config."""
    from sft_keras.config import validate_config

    spec = importlib.util.spec_from_file_location(
        "throughput_configs", os.path.join(REPO_ROOT, "benchmarks", "throughput_configs.py"))
    throughput_configs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput_configs)

    for name in ("resnet50", "small_cnn", "smoke"):
        validate_config(throughput_configs.get_config(name))
    with pytest.raises(ValueError, match="tiny_bert"):
        throughput_configs.get_config("nope")
