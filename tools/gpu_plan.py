"""Which GPUs the six original scripts launch on, and the per-GPU batch that keeps their global batch.

    python tools/gpu_plan.py ORIGINAL_IDS BATCH ACCUMULATION [the script's own flags]

prints shell code for tools/launch.sh to evaluate: the assignments ``LAUNCH_GPUS``, ``BATCH`` and
``ACCUM``, with at most one line for stderr when the plan differs from the original's, or one error
line and ``exit 1`` when no plan keeps the original global batch (BATCH x ACCUMULATION x the
original's GPU count). Where the script's flags set the batch themselves (``--batch_size``, ...),
the user's batch counts and is left alone.

- ``GPUS`` in the environment (``GPUS=0,1``) is used as given.
- Otherwise the original's ids, where this machine shows them all. GPU ids are the labels Paddle's
  launcher takes: those listed in ``CUDA_VISIBLE_DEVICES`` when it is set (a scheduler's choice,
  never unset here), else 0..N-1.
- Otherwise as many visible GPUs as the original used (the first ones), or all of them when fewer.
- No CUDA GPU: no ``--gpus`` (Paddle's launcher crashes on it there); one CPU process.
"""
import os
import shlex
import sys


class PlanError(ValueError):
    """No launch keeps the original's global batch."""


def visible_gpus():
    """The GPU labels Paddle's launcher accepts for ``--gpus`` on this machine ([] without CUDA)."""
    import paddle

    count = paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0
    if count == 0:
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if listed and listed != "all":
        return [x.strip() for x in listed.split(",") if x.strip()][:count]
    return [str(i) for i in range(count)]


def split_batch(global_batch, processes, batch):
    """(per-process batch <= ``batch``, accumulation) whose product times ``processes`` is ``global_batch``."""
    if global_batch % processes:
        raise PlanError(f"{processes} processes cannot share the original global batch of {global_batch} samples "
                        "evenly; choose a GPU count that divides it (GPUS=...) or give --batch_size and "
                        "--gradient_accumulation_steps yourself")
    per_process = global_batch // processes
    size = next(b for b in range(min(batch, per_process), 0, -1) if per_process % b == 0)
    return size, per_process // size


# flags that set the batch themselves: given any of them, the user's batch is the one that counts
BATCH_FLAGS = ("--batch_size", "--train_batch_size", "--gradient_accumulation_steps")


def plan(original_ids, batch, accumulation, visible, requested=None, user_batch=False):
    """(gpu ids or None for the CPU, per-process batch, accumulation, note or None); with
    ``user_batch`` the script's batch flags stay as they are (the user's own come after them)."""
    original = [x.strip() for x in original_ids.split(",")]
    global_batch = batch * accumulation * len(original)
    reasons = []
    if requested:
        ids = [x.strip() for x in requested.split(",") if x.strip()]
        unknown = [x for x in ids if x not in visible]
        if not visible:
            raise PlanError(f"GPUS={requested}, but this machine has no CUDA GPU (or this paddle build has no CUDA)")
        if unknown:
            raise PlanError(f"GPUS={requested}: no visible GPU {','.join(unknown)} (visible: {','.join(visible)})")
    elif not visible:
        ids = None
        reasons.append(f"no CUDA GPU here; dropping --gpus {original_ids} and running on the CPU")
    elif all(x in visible for x in original):
        ids = original
    else:
        ids = visible[:len(original)]
        reasons.append(f"GPU {original_ids} of the original is not visible here (visible: {','.join(visible)}); "
                       f"using {','.join(ids)}")
    size, steps = (batch, accumulation) if user_batch else split_batch(global_batch, len(ids) if ids else 1, batch)
    if (size, steps) != (batch, accumulation):
        reasons.append(f"batch {size} x accumulation {steps} per process keeps the original global batch "
                       f"of {global_batch}")
    return ids, size, steps, ("note: " + "; ".join(reasons)) if reasons else None


def main(argv):
    """Prints shell code: the assignments, and the note or error as a line on stderr (paddle's
    import noise on the real stderr is dropped by launch.sh)."""
    original_ids, batch, accumulation, script_flags = argv[1], int(argv[2]), int(argv[3]), argv[4:]
    user_batch = any(flag.split("=")[0] in BATCH_FLAGS for flag in script_flags)
    try:
        ids, size, steps, note = plan(original_ids, batch, accumulation, visible_gpus(), os.environ.get("GPUS"),
                                      user_batch)
    except PlanError as e:
        print(f"echo {shlex.quote(f'error: {e}')} >&2; exit 1")
        return 0
    if note:
        print(f"echo {shlex.quote(note)} >&2")
    print(f"LAUNCH_GPUS={shlex.quote('--gpus ' + ','.join(ids) if ids else '')}")
    print(f"BATCH={size}")
    print(f"ACCUM={steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
