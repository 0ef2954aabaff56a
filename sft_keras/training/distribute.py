"""The runtime: tf.distribute strategy, mixed precision and XLA from `config.runtime`.

`train.batch_size` is the GLOBAL batch size: each of
`strategy.num_replicas_in_sync` replicas gets `batch_size / replicas` examples
per step. With 8 GPUs and `batch_size=256`, each GPU sees 32 per step; keep the
per-replica batch the same when adding devices by scaling `batch_size` (and
usually the learning rate) with the number of replicas.
"""

import collections
import contextlib
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

from sft_keras import patches
from sft_keras.errors import ConfigError
from sft_keras.registry import Registry

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
JIT_COMPILE = ("auto", "true", "false")
# Models with fewer parameters than this run several steps per tf.function
# call on an accelerator (runtime.steps_per_execution=0): their steps are
# short enough that the per-step launch overhead shows.
SMALL_MODEL_PARAMS = 30_000_000
SMALL_MODEL_STEPS_PER_EXECUTION = 8

RuntimeSettings = collections.namedtuple(
    "RuntimeSettings", ["jit_compile", "precision", "steps_per_execution", "reason"])


def _one_device(runtime_config=None):
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _mirrored(runtime_config=None):
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    # No GPU: every logical CPU device (tests split the CPU into two). Reduce
    # through one device rather than with collective ops: collective instance
    # keys restart with every new strategy, so a second MirroredStrategy in the
    # same process (a notebook, a test suite) fails with "Shape mismatch in the
    # collective instance".
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(
        [d.name for d in cpus], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def _default(runtime_config=None):
    return tf.distribute.get_strategy()


def _auto(runtime_config=None):
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        name, strategy = "mirrored", _mirrored()
    elif len(gpus) == 1:
        name, strategy = "one_device", _one_device()
    else:
        name, strategy = "default", _default()
    logging.info("runtime.strategy='auto': %d GPU(s) visible, using %r.", len(gpus), name)
    print(f"runtime.strategy='auto': {len(gpus)} GPU(s) visible, using {name!r}.", flush=True)
    return strategy


def _multi_worker_mirrored(runtime_config=None):
    # Collective ops over the workers listed in TF_CONFIG (RING: plain gRPC,
    # works on CPU hosts; NCCL is picked by AUTO on GPUs). A collective that
    # waits longer than runtime.collective_timeout_s for a peer fails instead
    # of hanging (`collective_errors` turns that into a TrainingError).
    timeout = getattr(runtime_config, "collective_timeout_s", 0) or None
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO,
        timeout_seconds=timeout,
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _tpu(runtime_config):
    """TPUStrategy for `runtime.tpu`; a clear ConfigError when no TPU is reachable."""
    address = runtime_config.tpu if runtime_config is not None else ""
    # "": Colab / GCE auto-detection (COLAB_TPU_ADDR, the metadata server), then
    # a TPU VM's local chips. Anything else: a TPU name or grpc:// address.
    candidates = [address] if address else ["", "local"]
    tried = []
    for candidate in candidates:
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=candidate)
            if candidate != "local":
                tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, tf.errors.OpError, RuntimeError) as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            tried.append(f"TPUClusterResolver(tpu={candidate!r}): {first_line}")
    raise ConfigError(
        f"runtime.strategy='tpu' but no TPU was found. Received: runtime.tpu={address!r}. "
        f"Tried: {'; '.join(tried)}. Set runtime.tpu to the TPU name or address "
        "(e.g. --config.runtime.tpu=grpc://10.0.0.2:8470, or 'local' on a TPU VM), "
        "or pick another runtime.strategy ('auto', 'default', 'mirrored')."
    )


STRATEGIES = Registry("strategy", config_key="runtime.strategy")
STRATEGIES.register("default", _default)
STRATEGIES.register("one_device", _one_device)
STRATEGIES.register("mirrored", _mirrored)
STRATEGIES.register("multi_worker_mirrored", _multi_worker_mirrored)
STRATEGIES.register("tpu", _tpu)
STRATEGIES.register("auto", _auto)


def get_strategy(runtime_config):
    """Returns the `tf.distribute.Strategy` that `runtime_config.strategy` names.

    Build and compile the model inside `strategy.scope()`. `train.batch_size`
    is the global batch size: each of `strategy.num_replicas_in_sync` replicas
    gets an equal share of it.

    Names: `default` (no distribution), `one_device` (the first GPU, else the
    CPU), `mirrored` (every local GPU, or every logical CPU), 
    `multi_worker_mirrored` (workers from the `TF_CONFIG` environment
    variable), `tpu` (`runtime.tpu`: a TPU name or address, "" to auto-detect
    on Colab/GCE/TPU VM) and `auto` (mirrored with >1 GPU, one_device with 1,
    default otherwise; the choice is logged).

    Args:
        runtime_config: the `runtime` part of a config.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> get_strategy(get_default_config().runtime).num_replicas_in_sync
    1
    """
    return STRATEGIES.get(runtime_config.strategy)(runtime_config)


def local_devices():
    """This process's accelerators as plain dicts, what `resolve_runtime` reads.

    Each GPU is `{"device_type": "GPU", "compute_capability": (major, minor),
    "name": ...}` (from `tf.config.experimental.get_device_details`); each
    TPU core (visible once a TPU strategy is made) `{"device_type": "TPU"}`.
    A CPU-only machine gives `[]`.
    """
    devices = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        devices.append({"device_type": "GPU", "name": details.get("device_name", gpu.name),
                        "compute_capability": details.get("compute_capability")})
    devices += [{"device_type": "TPU", "name": d.name}
                for d in tf.config.list_logical_devices("TPU")]
    return devices


def resolve_runtime(jit_compile="auto", precision="auto", steps_per_execution=0, devices=(),
                    num_params=None):
    """Decides XLA, mixed precision and steps per execution for the devices at hand.

    A pure function of its arguments (tests pass fake device descriptions).
    Explicit values are kept; `"auto"` (and `steps_per_execution=0`) become:

    - no accelerator (CPU): XLA off, float32, 1 step per execution: what
      Keras's own `"auto"` does there.
    - GPUs: XLA on, also under a `tf.distribute` strategy (Keras's own
      `"auto"` turns it off under any strategy, the path sft_keras takes for
      GPUs; Keras still falls back, with a warning, for a model with a layer
      XLA cannot compile). Precision by the oldest GPU's compute capability:
      `mixed_bfloat16` from 8.0 (Ampere, Hopper...), `mixed_float16` from 7.0
      (Volta, Turing: fast float16 only, Keras adds loss scaling), float32
      below (no tensor cores).
    - TPUs: `mixed_bfloat16`; `jit_compile` False (a TPU strategy compiles
      every step with XLA anyway).
    - on GPUs and TPUs, `SMALL_MODEL_STEPS_PER_EXECUTION` steps per
      `tf.function` call for a model under `SMALL_MODEL_PARAMS` parameters
      (`num_params`; unknown: 1), whose steps are short enough for the
      per-step launch overhead to show. Callbacks then see every Nth batch.

    Args:
        jit_compile: `runtime.jit_compile` (`"auto"`, `"true"`, `"false"`).
        precision: `runtime.precision` (`"auto"` or one of `PRECISIONS`).
        steps_per_execution: int. `runtime.steps_per_execution` (0: auto).
        devices: list of dicts, as `local_devices()` returns.
        num_params: int or None. The model's parameter count.

    Returns:
        `RuntimeSettings(jit_compile, precision, steps_per_execution, reason)`:
        `jit_compile` a bool, `precision` a Keras dtype policy name,
        `reason` a short sentence on what the choice was based on.

    Example:

    >>> resolve_runtime(devices=[])[:3]
    (False, 'float32', 1)
    >>> a100 = {"device_type": "GPU", "compute_capability": (8, 0)}
    >>> resolve_runtime(devices=[a100, a100], num_params=22_000_000)[:3]
    (True, 'mixed_bfloat16', 8)
    >>> t4 = {"device_type": "GPU", "compute_capability": (7, 5)}
    >>> resolve_runtime("false", devices=[t4], num_params=110_000_000)[:3]
    (False, 'mixed_float16', 1)
    """
    jit_value = str(jit_compile).lower()
    if jit_value not in JIT_COMPILE:
        raise ConfigError(
            "runtime.jit_compile must be one of 'auto', 'true', 'false'. "
            f"Received: runtime.jit_compile={jit_compile!r}"
        )
    if precision not in PRECISIONS:
        raise ConfigError(
            "runtime.precision must be one of " + ", ".join(repr(p) for p in PRECISIONS)
            + f". Received: runtime.precision={precision!r}"
        )
    if isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, int) or (
            steps_per_execution < 0):
        raise ConfigError(
            "runtime.steps_per_execution must be an integer >= 0 (0: auto). "
            f"Received: runtime.steps_per_execution={steps_per_execution!r}"
        )
    kinds = {d.get("device_type") for d in devices}
    gpus = [d for d in devices if d.get("device_type") == "GPU"]
    if "TPU" in kinds:
        reason, auto_jit, auto_precision = "TPU", False, "mixed_bfloat16"
    elif gpus:
        capabilities = [tuple(d.get("compute_capability") or (0, 0)) for d in gpus]
        oldest = min(capabilities)
        reason = f"{len(gpus)} GPU(s), compute capability {oldest[0]}.{oldest[1]}"
        auto_jit = True
        auto_precision = ("mixed_bfloat16" if oldest >= (8, 0) else
                          "mixed_float16" if oldest >= (7, 0) else "float32")
    else:
        reason, auto_jit, auto_precision = "no GPU or TPU", False, "float32"
    small = num_params is not None and num_params < SMALL_MODEL_PARAMS
    auto_steps = SMALL_MODEL_STEPS_PER_EXECUTION if (kinds & {"GPU", "TPU"}) and small else 1
    return RuntimeSettings(
        jit_compile={"auto": auto_jit, "true": True, "false": False}[jit_value],
        precision=auto_precision if precision == "auto" else precision,
        steps_per_execution=steps_per_execution or auto_steps,
        reason=reason,
    )


def jit_compile_arg(runtime_config, devices=None):
    """Returns `model.compile`'s `jit_compile` argument for `runtime.jit_compile`.

    Args:
        runtime_config: the `runtime` part of a config; `jit_compile` is
            `"auto"` (XLA with a GPU, also under tf.distribute; see
            `resolve_runtime`), `"true"` or `"false"` (any case).
        devices: list of dicts or None (default: `local_devices()`).

    Example:

    >>> from sft_keras.config import get_default_config
    >>> runtime = get_default_config().runtime
    >>> jit_compile_arg(runtime, devices=[])
    False
    >>> jit_compile_arg(runtime, devices=[{"device_type": "GPU", "compute_capability": (9, 0)}])
    True
    >>> runtime.jit_compile = "False"
    >>> jit_compile_arg(runtime)
    False
    """
    return resolve_runtime(runtime_config.jit_compile, "float32",
                           devices=local_devices() if devices is None else devices).jit_compile


def steps_per_execution_arg(runtime_config, model, devices=None):
    """Returns `model.compile`'s `steps_per_execution` for `runtime.steps_per_execution`.

    0 (auto): several steps per call for a small model on a GPU or TPU, else
    1 (see `resolve_runtime`).

    Example:

    >>> from sft_keras.config import get_default_config
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> steps_per_execution_arg(get_default_config().runtime, model, devices=[])
    1
    """
    return resolve_runtime(
        "auto", "float32", runtime_config.steps_per_execution,
        devices=local_devices() if devices is None else devices, num_params=model.count_params(),
    ).steps_per_execution


def resolved_precision(precision, devices=None):
    """`runtime.precision` with `"auto"` resolved for `devices` (default: `local_devices()`).

    Example:

    >>> resolved_precision("auto", devices=[])
    'float32'
    >>> resolved_precision("mixed_float16")
    'mixed_float16'
    """
    if precision != "auto":
        return resolve_runtime("auto", precision, devices=[]).precision
    return resolve_runtime(precision=precision,
                           devices=local_devices() if devices is None else devices).precision


def runtime_summary(model, strategy):
    """One line: the XLA, precision and steps-per-execution settings a compiled model runs with.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(loss="mse", jit_compile=False)
    >>> runtime_summary(model, tf.distribute.get_strategy())
    'Runtime: 1 replica(s), no GPU or TPU: jit_compile=False, precision=float32, steps_per_execution=1.'
    """
    reason = resolve_runtime(devices=local_devices()).reason
    return (f"Runtime: {strategy.num_replicas_in_sync} replica(s), {reason}: "
            f"jit_compile={bool(model.jit_compile)}, precision={model.dtype_policy.name}, "
            f"steps_per_execution={model.steps_per_execution}.")


@contextlib.contextmanager
def precision_policy(precision):
    """Sets Keras's global dtype policy to `precision` inside the block, then restores it.

    Build the model inside the block: layers take the policy when they are
    created (mixed: float16/bfloat16 compute, float32 variables). Keras wraps
    the optimizer in a `LossScaleOptimizer` at `compile()` when the model's
    policy is `mixed_float16`; bfloat16 needs no loss scaling. sft_keras heads
    compute their output layer in float32.

    Args:
        precision: str. One of `"auto"` (by the local devices: see
            `resolve_runtime`), `"float32"`, `"mixed_bfloat16"`, `"mixed_float16"`.

    Example:

    >>> with precision_policy("mixed_bfloat16"):
    ...     keras.layers.Dense(2).dtype_policy.name
    'mixed_bfloat16'
    >>> keras.config.dtype_policy().name
    'float32'
    """
    precision = resolved_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def task_info(strategy):
    """Returns `(task_type, task_id)` of this process in a multi-worker cluster.

    `(None, 0)` outside multi-worker training, where this process is the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, 0
    return resolver.task_type, resolver.task_id or 0


def is_chief(strategy):
    """True when this process writes the run's outputs (checkpoints, logs, exports).

    In multi-worker training that is the `chief` task, or `worker` 0 when the
    cluster has no chief; every other process is not.

    Example:

    >>> is_chief(tf.distribute.get_strategy())
    True
    """
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "worker" and task_id == 0 and not has_chief


@contextlib.contextmanager
def output_dir(strategy, workdir):
    """Yields the folder this process writes its outputs to.

    The chief writes to `workdir`. Every other worker writes to a temporary
    folder (multi-worker saving is collective: all workers must save, only
    the chief's copy is kept), removed when the block ends.

    Args:
        strategy: the run's `tf.distribute.Strategy`.
        workdir: str. The run's folder.
    """
    if is_chief(strategy):
        yield workdir
        return
    task_type, task_id = task_info(strategy)
    scratch = tempfile.mkdtemp(prefix=f"sft_{task_type}_{task_id}_")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def is_multi_worker(strategy):
    """True when `strategy` synchronizes several worker processes (TF_CONFIG).

    That is a `MultiWorkerMirroredStrategy` whose cluster has more than one
    chief/worker task (an evaluator counts the evaluators), what the
    strategy's private `extended._in_multi_worker_mode()` computes, read from
    its public `cluster_resolver`.

    Example:

    >>> is_multi_worker(tf.distribute.get_strategy())
    False
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    jobs = ("evaluator",) if resolver.task_type == "evaluator" else ("chief", "worker")
    return sum(len(cluster.get(job, ())) for job in jobs) > 1


def prepare_for_multi_worker_fit(model, strategy):
    """Makes Keras 3's `model.fit`/`evaluate` work under a multi-worker strategy.

    Under a multi-worker strategy (`is_multi_worker`) this applies
    `sft_keras.patches.prepare_for_multi_worker_fit` (keras-team/keras#20585:
    local batch for the symbolic build, per-worker metrics averaged across
    workers, synchronized BatchNorm), which fails at once on an untested
    Keras version. Does nothing for other strategies.

    Args:
        model: a Keras model built and compiled under `strategy.scope()`.
        strategy: the run's `tf.distribute.Strategy`.

    Returns:
        `model`.
    """
    if not is_multi_worker(strategy):
        return model  # Nothing to patch, so no version to check either.
    return patches.prepare_for_multi_worker_fit(model, strategy)


# What a collective raises when a peer is gone: its timeout, a closed
# connection, or the cancellation TensorFlow applies to the other pending ones.
COLLECTIVE_ERRORS = (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
                     tf.errors.CancelledError, tf.errors.AbortedError)


def _position(state):
    if not state:
        return "none yet: the restarted run starts afresh"
    if state.get("step"):
        return f"epoch {state['last_epoch'] + 1}, step {state['step']}"
    return f"after epoch {state['last_epoch']}"


def _error_summary(error):
    """The telling line of a TensorFlow error: not "Graph execution error:" nor its stack."""
    lines = [line.strip() for line in str(error).splitlines()]
    useful = [line for line in lines if line and not line.startswith(
        ("Graph execution error", "Detected at node", "File ", "[[", "Additional GRPC",
         ":UNKNOWN:", "Stack trace"))
        and not line.endswith("(most recent call last):")]
    return " ".join(useful)[:400] or type(error).__name__


@contextlib.contextmanager
def collective_errors(strategy, runtime_config, checkpoints):
    """Turns a failed multi-worker collective (a dead or hung worker) into a `TrainingError`.

    Under a multi-worker strategy, a worker that dies leaves the others
    waiting in a collective (the gradient all-reduce) until
    `runtime.collective_timeout_s` passes, or until TensorFlow sees the
    connection close. The error names the timeout and the commit a restart
    of every worker resumes from. Other strategies: nothing is caught.

    Args:
        strategy: the run's `tf.distribute.Strategy`.
        runtime_config: the `runtime` part of the config.
        checkpoints: `sft_keras.run.CheckpointDir` of the run (the chief's in the message).

    Raises:
        TrainingError: a collective failed, with the TensorFlow error's first line.
    """
    if not is_multi_worker(strategy):
        yield
        return
    try:
        yield
    except COLLECTIVE_ERRORS as e:
        from sft_keras.errors import TrainingError

        task_type, task_id = task_info(strategy)
        detail = _error_summary(e)
        timeout = getattr(runtime_config, "collective_timeout_s", 0)
        raise TrainingError(
            f"Multi-worker training stopped on {task_type} {task_id}: a collective operation "
            f"across the {strategy.num_replicas_in_sync} replicas failed ({type(e).__name__}: "
            f"{detail}). Another worker probably died, hangs or cannot be reached "
            f"(runtime.collective_timeout_s={timeout}). Restart every worker with the same "
            "command: they resume from the chief's last commit in --workdir (here: "
            f"{_position(checkpoints.read_state())})."
        ) from None


def check_same_position(strategy, position, where):
    """Raises a `TrainingError` unless every worker resumes at the same `position`.

    Every worker reads the chief's commit from the shared `--workdir`; a
    worker that sees another commit (a workdir that is not shared, or a stale
    copy) would run other steps than the rest and hang or diverge. One
    all-gather of the positions before training tells.

    Args:
        strategy: a multi-worker `tf.distribute.Strategy`.
        position: tuple of ints, e.g. `(epochs finished, step)`.
        where: str. This worker's run folder, named in the error.
    """
    local = tf.constant([list(position)], tf.int64)

    @tf.function
    def gather():
        context = tf.distribute.get_replica_context()
        return context.all_gather(local, axis=0)

    gathered = strategy.experimental_local_results(strategy.run(gather))[0].numpy().tolist()
    if any(row != list(position) for row in gathered):
        from sft_keras.errors import TrainingError

        task_type, task_id = task_info(strategy)
        raise TrainingError(
            f"The workers would resume at different positions (epochs finished, step), one row "
            f"per replica: {gathered}; {task_type} {task_id} read {list(position)} from {where}. "
            "Every worker must see the chief's commits: give all of them the same --workdir "
            "on a shared file system."
        )
