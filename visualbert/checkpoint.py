"""Training checkpoints: written atomically, keyed so that any new process can load them.

``checkpoint-<step>/`` holds the model (``from_pretrained`` loads it), the optimizer and LR scheduler,
the grad scaler, each rank's own random generators (``rng_state_rank<r>.pdparams``: dropout draws
differ per rank) and ``trainer_state.json`` (step, epoch, position in the epoch, best metric). It
is written under a temporary name and renamed into place once complete, so a run killed
while saving still has its previous checkpoint, and ``--resume latest`` finds only complete ones.

Checkpoints are read back through ``safeload`` (``paddle.load`` is plain pickle, and checkpoints get
copied around), every file is read before any of it is applied, and weights that do not fit the
model are refused rather than half-loaded. Under data parallelism rank 0 chooses the checkpoint and
every rank reads that one path (no rank looks on its own disk for another).
"""
import json
import os
import random
import re
import shutil

import numpy as np
import paddle
import paddle.distributed as dist

from .safeload import UnsafePickleError, load_paddle

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
LEGACY_RNG_FILE = "rng_state.pdparams"
RNG_FILE_RE = re.compile(r"^rng_state_rank\d+\.pdparams$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, incomplete, or not this model's."""


def save_checkpoint(output_dir, step, model, optimizer, scaler, state, save_total_limit, rng_states):
    """Write checkpoint-<step> atomically: a temp dir renamed into place only once complete.
    ``rng_states``: every rank's ``own_rng_state()`` (``gather_rng_states``), one file each."""

    def write(tmp):
        model.save_pretrained(tmp)
        paddle.save(_optimizer_state_by_structure(model, optimizer.state_dict()), os.path.join(tmp, "optimizer.pdopt"))
        if scaler is not None:
            paddle.save(scaler.state_dict(), os.path.join(tmp, "scaler.pdparams"))
        for rank, rng in enumerate(rng_states):
            paddle.save(rng, os.path.join(tmp, rng_file(rank)))
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


def update_trainer_state(path, **changes):
    """Change fields of checkpoint ``path``'s trainer state, atomically (temp file + rename)."""
    state_file = os.path.join(path, TRAINER_STATE)
    with open(state_file) as f:
        state = json.load(f)
    state.update(changes)
    tmp = state_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state_file)


def rng_file(rank):
    return f"rng_state_rank{rank}.pdparams"


def _own_device():
    """("gpu", this process's device id) on a GPU, else ("cpu", None)."""
    place = paddle.framework._current_expected_place_()
    if isinstance(place, paddle.CUDAPlace):
        return "gpu", place.get_device_id()
    return "cpu", None


def _cuda_generator(device_id):
    return paddle.framework.core.default_cuda_generator(device_id)


def own_rng_state(dropout_seed):
    """This process's random generators: the CPU one and, on a GPU, the generator of its own device
    only (``paddle.get_rng_state`` returns one per visible GPU, which breaks on another machine)."""
    device, device_id = _own_device()
    return {"rank": dist.get_rank(), "dropout_seed": dropout_seed, "device": device,
            "cpu": paddle.framework.core.default_cpu_generator().get_state(),
            "gpu": _cuda_generator(device_id).get_state() if device == "gpu" else None}


def gather_rng_states(dropout_seed):
    """Every rank's ``own_rng_state``, in rank order (all ranks must call it)."""
    own = own_rng_state(dropout_seed)
    if dist.get_world_size() == 1:
        return [own]
    states = []
    dist.all_gather_object(states, own)
    return states


def restore_rng_state(path, rng, dropout_seed):
    """Set this rank's generators from ``rng`` (its file of checkpoint ``path``). Where that cannot
    be exact (none saved for this rank, or saved on another kind of device) dropout starts afresh
    from ``dropout_seed``; returns a note on the latter."""
    device, device_id = _own_device()
    if rng is None:  # saved by fewer ranks: resume_checkpoint says so once
        paddle.seed(dropout_seed)
        return None
    if rng["device"] != device:
        paddle.seed(dropout_seed)
        return (f"{path} holds random states saved on {rng['device'].upper()}, this run is on {device.upper()}; "
                "dropout starts afresh from seed + rank, so the resumed run is not bit-exact")
    paddle.framework.core.default_cpu_generator().set_state(rng["cpu"])
    if device == "gpu":
        _cuda_generator(device_id).set_state(rng["gpu"])
    return None


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


def resume_checkpoint(resume, output_dir, model, optimizer, scaler, dropout_seed):
    """Load what ``--resume`` names into model, optimizer, scaler and this rank's random generators;
    returns (path, trainer state), or (None, None) to start fresh. With ``latest``, an unreadable
    newest checkpoint (a torn copy, a corrupt file) falls back to the one before it, saying so; a
    named one is refused instead.

    Rank 0 chooses (several nodes need not share a filesystem, so other ranks may see other files);
    every rank then reads the path it chose, and all stop with one line when one of them cannot."""
    world, rank = dist.get_world_size(), dist.get_rank()
    chosen = parts = error = None
    if rank == 0:
        try:
            chosen, parts = _choose_checkpoint(resume, output_dir)
        except SystemExit as e:
            error = str(e.code)
    if world > 1:
        box = [(chosen, error)]
        dist.broadcast_object_list(box, src=0)
        chosen, error = box[0]
    if error:
        raise SystemExit(error)
    if chosen is None:
        return None, None
    if rank != 0:
        try:
            parts = read_checkpoint(chosen)
        except (CheckpointError, SystemExit) as e:
            error = str(e.code if isinstance(e, SystemExit) else e)
    if world > 1:
        errors = []
        dist.all_gather_object(errors, error)
        failed = [(r, e) for r, e in enumerate(errors) if e]
        if failed:
            r, e = failed[0]
            raise SystemExit(f"error: --resume {resume}: rank 0 chose {chosen}, which rank {r} cannot read ({e}); "
                             "every node needs that checkpoint at the same path (a shared filesystem, or a copy)")
    state = apply_checkpoint(chosen, parts, model, optimizer, scaler)
    notes = [restore_rng_state(chosen, parts["rng"], dropout_seed)]
    if parts["rng_ranks"] == 0:
        notes.append(f"{chosen} was saved without per-rank random states (an older version): dropout starts "
                     "afresh from seed + rank, so the resumed run is not bit-exact")
    elif parts["rng_ranks"] < world:
        notes.append(f"{chosen} holds the random states of {parts['rng_ranks']} rank(s), this run has {world}: "
                     f"{_ranks(parts['rng_ranks'], world - 1)} start their dropout afresh from seed + rank, "
                     "so the resumed run is not bit-exact")
    note = next((n for n in notes if n), None)
    if note and rank == 0:
        print(f"note: {note}", flush=True)
    return chosen, state


def _ranks(first, last):
    return f"rank {first}" if first == last else f"ranks {first}-{last}"


def _choose_checkpoint(resume, output_dir):
    """(path, its parts read) of what ``--resume`` names, falling back past unreadable ones for ``latest``."""
    path = resolve_resume(resume, output_dir)
    if path is None:
        return None, None
    candidates = list_checkpoints(output_dir)[::-1] if resume == "latest" else [path]
    for candidate in candidates:
        try:
            return candidate, read_checkpoint(candidate)
        except CheckpointError as e:
            if resume != "latest":
                raise SystemExit(f"error: --resume {resume}: {e}") from None
            print(f"warning: {e}; falling back to the previous checkpoint", flush=True)
    raise SystemExit(f"error: --resume latest: no readable checkpoint in {output_dir} (see the warnings above)")


def read_checkpoint(path):
    """Every file of a checkpoint, read safely; CheckpointError when any is missing or unreadable.
    ``rng`` is this rank's random state (None when the checkpoint was saved by fewer ranks)."""
    try:
        parts = {"model": load_paddle(os.path.join(path, "model_state.pdparams")),
                 "optimizer": load_paddle(os.path.join(path, "optimizer.pdopt")),
                 "rng": None, "scaler": None}
        parts["rng_ranks"] = sum(1 for name in os.listdir(path) if RNG_FILE_RE.match(name))
        if parts["rng_ranks"] == 0:  # an older version kept one file of every visible device's state
            load_paddle(os.path.join(path, LEGACY_RNG_FILE), rng_state=True)
        own = os.path.join(path, rng_file(dist.get_rank()))
        if os.path.exists(own):
            parts["rng"] = load_paddle(own, rng_state=True)
            if not isinstance(parts["rng"], dict) or not {"device", "cpu", "gpu"} <= set(parts["rng"]):
                raise ValueError(f"{own}: not a random state saved by this version")
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
    """Set what ``read_checkpoint`` read (all but the random generators, see ``restore_rng_state``);
    refuses weights that do not fit the model exactly."""
    _check_weights_fit(path, model, parts["model"])
    model.set_state_dict(parts["model"])
    optimizer.set_state_dict(_optimizer_state_by_structure(model, parts["optimizer"], to_internal=True))
    if scaler is not None and parts["scaler"] is not None:
        scaler.load_state_dict(parts["scaler"])
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
