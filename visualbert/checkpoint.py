"""Training checkpoints: written atomically, keyed so that any new process can load them.

``checkpoint-<step>/`` holds the model (``from_pretrained`` loads it), the optimizer and LR scheduler,
the grad scaler, every RNG state and ``trainer_state.json`` (step, epoch, position in the epoch, best
metric). It is written under a temporary name and renamed into place once complete, so a run killed
while saving still has its previous checkpoint, and ``--resume latest`` finds only complete ones.

Checkpoints are read back through ``safeload`` (``paddle.load`` is plain pickle, and checkpoints get
copied around), every file is read before any of it is applied, and weights that do not fit the
model are refused rather than half-loaded.
"""
import json
import os
import random
import re
import shutil

import numpy as np
import paddle

from .safeload import UnsafePickleError, load_paddle

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, incomplete, or not this model's."""


def save_checkpoint(output_dir, step, model, optimizer, scaler, state, save_total_limit):
    """Write checkpoint-<step> atomically: a temp dir renamed into place only once complete."""

    def write(tmp):
        model.save_pretrained(tmp)
        paddle.save(_optimizer_state_by_structure(model, optimizer.state_dict()), os.path.join(tmp, "optimizer.pdopt"))
        if scaler is not None:
            paddle.save(scaler.state_dict(), os.path.join(tmp, "scaler.pdparams"))
        paddle.save({"paddle": paddle.get_rng_state(),
                     "cuda": paddle.get_cuda_rng_state() if paddle.is_compiled_with_cuda() else None},
                    os.path.join(tmp, "rng_state.pdparams"))
        with open(os.path.join(tmp, TRAINER_STATE), "w") as f:
            json.dump(dict(state, numpy_rng=_jsonable_np_state(), python_rng=_jsonable_py_state()), f, indent=1)
            f.flush()
            os.fsync(f.fileno())

    final = os.path.join(output_dir, f"checkpoint-{step}")
    _write_dir_atomically(final, os.path.join(output_dir, f".tmp-checkpoint-{step}"), write)
    if save_total_limit > 0:
        for old in list_checkpoints(output_dir)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_dir_atomically(final, tmp, write):
    """``write(tmp)``, then rename tmp to final. A failed write (disk full, Ctrl-C) removes tmp, so
    nothing half-written stays behind; a killed process leaves only tmp, which no reader takes."""
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write(tmp)
    except (OSError, KeyboardInterrupt) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"writing {final} failed ({e.strerror or e}); removed the partial {tmp}, "
                                   "what was saved before is intact") from None
        raise
    if os.path.isdir(final) and _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous version; final held a complete one throughout
        return
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _exchange(a, b):
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE): replacing ``model/`` by
    remove-then-rename left no ``model/`` at all when the run was killed between the two. False where
    the system or filesystem cannot (the caller then removes and renames)."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def list_checkpoints(output_dir):
    """Complete checkpoints, oldest first (a half-written one never has its final name)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if m and os.path.isfile(os.path.join(path, TRAINER_STATE)):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def resolve_resume(resume, output_dir):
    if resume is None:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(output_dir)
        if not ckpts:
            print(f"note: --resume latest found no checkpoint in {output_dir}; starting fresh", flush=True)
            return None
        return ckpts[-1]
    if not os.path.isfile(os.path.join(resume, TRAINER_STATE)):
        raise SystemExit(f"error: --resume {resume}: not a complete checkpoint (no {TRAINER_STATE})")
    return resume


def resume_checkpoint(resume, output_dir, model, optimizer, scaler):
    """Load what ``--resume`` names into model, optimizer and scaler; returns (path, trainer state),
    or (None, None) to start fresh. With ``latest``, an unreadable newest checkpoint (a torn copy, a
    corrupt file) falls back to the one before it, saying so; a named one is refused instead."""
    path = resolve_resume(resume, output_dir)
    if path is None:
        return None, None
    candidates = list_checkpoints(output_dir)[::-1] if resume == "latest" else [path]
    for candidate in candidates:
        try:
            parts = read_checkpoint(candidate)
        except CheckpointError as e:
            if resume != "latest":
                raise SystemExit(f"error: --resume {resume}: {e}") from None
            print(f"warning: {e}; falling back to the previous checkpoint", flush=True)
            continue
        return candidate, apply_checkpoint(candidate, parts, model, optimizer, scaler)
    raise SystemExit(f"error: --resume latest: no readable checkpoint in {output_dir} (see the warnings above)")


def read_checkpoint(path):
    """Every file of a checkpoint, read safely; CheckpointError when any is missing or unreadable."""
    try:
        parts = {"model": load_paddle(os.path.join(path, "model_state.pdparams")),
                 "optimizer": load_paddle(os.path.join(path, "optimizer.pdopt")),
                 "rng": load_paddle(os.path.join(path, "rng_state.pdparams"), rng_state=True),
                 "scaler": None}
        if os.path.exists(os.path.join(path, "scaler.pdparams")):
            parts["scaler"] = load_paddle(os.path.join(path, "scaler.pdparams"))
        with open(os.path.join(path, TRAINER_STATE)) as f:
            parts["state"] = json.load(f)
        missing = [k for k in ("step", "epoch", "batches_done", "numpy_rng", "python_rng") if k not in parts["state"]]
        if missing:
            raise ValueError(f"{os.path.join(path, TRAINER_STATE)}: lacks {', '.join(missing)}")
        if not isinstance(parts["model"], dict) or not isinstance(parts["optimizer"], dict):
            raise ValueError(f"{path}: model_state.pdparams / optimizer.pdopt do not hold state dicts")
    except UnsafePickleError as e:
        raise SystemExit(f"error: {e}") from None  # tampering is not corruption: never fall back silently
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable: {e}") from None
    return parts


def apply_checkpoint(path, parts, model, optimizer, scaler):
    """Set what ``read_checkpoint`` read; refuses weights that do not fit the model exactly."""
    _check_weights_fit(path, model, parts["model"])
    model.set_state_dict(parts["model"])
    optimizer.set_state_dict(_optimizer_state_by_structure(model, parts["optimizer"], to_internal=True))
    if scaler is not None and parts["scaler"] is not None:
        scaler.load_state_dict(parts["scaler"])
    rng = parts["rng"]
    paddle.set_rng_state(rng["paddle"])
    if rng.get("cuda") is not None and paddle.is_compiled_with_cuda():
        paddle.set_cuda_rng_state(rng["cuda"])
    state = parts["state"]
    np.random.set_state(tuple(state["numpy_rng"]))
    random.setstate(_tuple_deep(state["python_rng"]))
    return state


def _check_weights_fit(path, model, weights):
    """A resumed run must continue the same model: every weight present, none extra, same shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [f"{k} {tuple(np.shape(weights[k]))} vs {expected[k]}" for k in expected
                if k in weights and tuple(np.shape(weights[k])) != expected[k]]
    problems = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("with other shapes", reshaped))
                if keys]
    if problems:
        raise SystemExit(f"error: not resumed: {os.path.join(path, 'model_state.pdparams')} does not fit this model: "
                         f"weights {'; '.join(problems)} (resume with the model the run was started with)")


def _optimizer_state_by_structure(model, state, to_internal=False):
    """Key optimizer accumulators by parameter path (``encoder.layer.0...``) instead of paddle's
    per-process internal names (``linear_12.w_0``), so a checkpoint loads into any new process."""
    pairs = [(p.name, n) for n, p in model.named_parameters()]
    if to_internal:
        pairs = [(n, i) for i, n in pairs]
    pairs.sort(key=lambda x: -len(x[0]))  # longest first: linear_12.w_0 before linear_1.w_0

    def rename(key):
        for old, new in pairs:
            if key.startswith(old + "_") or key == old:
                return new + key[len(old):]
        return key

    out = {}
    for key, value in state.items():
        if key == "master_weights":
            value = {rename(k): v for k, v in value.items()}
        elif key != "LR_Scheduler":
            key = rename(key)
        out[key] = value
    return out


def _jsonable_np_state():
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return [name, keys.tolist(), pos, has_gauss, gauss]


def _jsonable_py_state():
    return random.getstate()


def _tuple_deep(x):
    return tuple(_tuple_deep(v) for v in x) if isinstance(x, list) else x


def save_model(model, path):
    """Save a loadable model dir atomically (``best/``, the final model)."""
    _write_dir_atomically(path, path.rstrip("/") + ".tmp", model.save_pretrained)
