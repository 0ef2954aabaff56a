"""Resuming a run: what a workdir's committed state allows, and what a rerun must match.

A run commits every finished epoch (`callbacks.AtomicCheckpoint`); rerunning
`sft-train` on the same workdir resumes after the last commit, or returns a
finished run's metrics without training again.
"""

import json

from sft_keras.errors import ConfigError
from sft_keras.files import atomic_write_text

# Changing these between a run and its resume would make the checkpoint
# meaningless (other data, another model) or change the data order.
RESUME_FIXED = ("seed", "task", "data.", "model.", "train.batch_size", "train.stages")


def _flat(tree, prefix=""):
    items = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            items.update(_flat(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def committed_state(run_dir):
    """The run's last commit (`state.json`), or None for a new run.

    Args:
        run_dir: `sft_keras.run.RunDir`.

    Raises:
        ConfigError: a state written by an older sft_keras, which cannot resume.
    """
    state = run_dir.checkpoints.read_state()
    if state and "weights" not in state:
        raise ConfigError(
            f"{run_dir.path} holds a run written by an older sft_keras, which cannot be resumed: "
            "pass --overwrite (Python: overwrite=True) to start afresh, or use another --workdir."
        )
    return state


def check_resumable(config, run_dir, state):
    """Raises a ConfigError when `config` differs from the stored run in a key that matters.

    Args:
        config: the validated config of the rerun.
        run_dir: `sft_keras.run.RunDir` of the stopped run.
        state: its `state.json` dict.
    """
    from sft_keras.config import config_to_json

    try:
        old = _flat(run_dir.read_config_dict())
    except Exception:  # No or unreadable config.json: nothing to compare.
        return
    new = _flat(json.loads(config_to_json(config)))
    changed = sorted(
        k for k in set(old) | set(new) if old.get(k) != new.get(k) and k.startswith(RESUME_FIXED)
    )
    if changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(
            f"{run_dir.path} holds a run stopped after epoch {state['last_epoch']} with a "
            f"different config ({diffs}). Resuming needs the same data, model, batch size and "
            "stages: rerun with the old values, use another --workdir, or pass --overwrite to "
            "start afresh."
        )


def completed_metrics(run_dir, state):
    """The metrics of a finished run (no training, no new export), with its latest export."""
    from sft_keras.files import existing_versions

    metrics = run_dir.read_metrics() or {}
    versions = existing_versions(run_dir.export)
    if versions:
        import os

        metrics["export_path"] = os.path.join(run_dir.export, str(versions[-1]))
    print(
        f"The run in {run_dir.path} is complete ({state['last_epoch']} epochs, best "
        f"{state['monitor']}={state['best']} at epoch {state['best_epoch']}); not training "
        "again. Pass --overwrite (Python: overwrite=True) to start afresh.",
        flush=True,
    )
    return metrics


def keep_log_rows(path, epochs_done):
    """Drops rows of epochs not committed (a killed run logged them, a resume redoes them)."""
    import os

    if not os.path.exists(path):
        return
    if not epochs_done:
        os.remove(path)
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    kept = lines[:1] + [
        line for line in lines[1:] if line.split(",", 1)[0].isdigit()
        and int(line.split(",", 1)[0]) < epochs_done
    ]
    atomic_write_text(path, "".join(kept))


def mark_complete(run_dir):
    """Records in `state.json` that the run finished (a rerun will not train again)."""
    state = run_dir.checkpoints.read_state()
    if state:
        state["complete"] = True
        run_dir.checkpoints.write_state(state)


def copy_commit(source, target):
    """Copies the last commit of `source` (the chief's workdir) into `target` (a worker's).

    Multi-worker runs: only the chief writes the shared workdir; every other
    worker starts from a copy of its `config.json`, `state.json` and the
    weights file that names, so all of them resume at the same position.
    Nothing is copied when `source` holds no commit.

    Args:
        source: `sft_keras.run.RunDir` of the chief's workdir.
        target: `sft_keras.run.RunDir` of this worker's scratch folder.
    """
    import os
    import shutil

    state = source.checkpoints.read_state()
    if not state or "weights" not in state:
        return
    os.makedirs(target.checkpoints.path, exist_ok=True)
    shutil.copyfile(os.path.join(source.checkpoints.path, state["weights"]),
                    os.path.join(target.checkpoints.path, state["weights"]))
    for name in ("config_path", "metrics_path"):
        if os.path.isfile(getattr(source, name)):
            shutil.copyfile(getattr(source, name), getattr(target, name))
    target.checkpoints.write_state(state)
