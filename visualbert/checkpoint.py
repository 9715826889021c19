"""Training checkpoints: written atomically, keyed so that any new process can load them.

``checkpoint-<step>/`` holds the model (``from_pretrained`` loads it), the optimizer and LR scheduler,
the grad scaler, every RNG state and ``trainer_state.json`` (step, epoch, position in the epoch, best
metric). It is written under a temporary name and renamed into place once complete, so a run killed
while saving still has its previous checkpoint, and ``--resume latest`` finds only complete ones.
"""
import json
import os
import random
import re
import shutil

import numpy as np
import paddle

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


def save_checkpoint(output_dir, step, model, optimizer, scaler, state, save_total_limit):
    """Write checkpoint-<step> atomically: a temp dir renamed into place only once complete."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = os.path.join(output_dir, f".tmp-checkpoint-{step}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save_pretrained(tmp)
    paddle.save(_optimizer_state_by_structure(model, optimizer.state_dict()), os.path.join(tmp, "optimizer.pdopt"))
    if scaler is not None:
        paddle.save(scaler.state_dict(), os.path.join(tmp, "scaler.pdparams"))
    paddle.save({"paddle": paddle.get_rng_state(),
                 "cuda": paddle.get_cuda_rng_state() if paddle.is_compiled_with_cuda() else None},
                os.path.join(tmp, "rng_state.pdparams"))
    state = dict(state, numpy_rng=_jsonable_np_state(), python_rng=_jsonable_py_state())
    with open(os.path.join(tmp, TRAINER_STATE), "w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if save_total_limit > 0:
        for old in list_checkpoints(output_dir)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


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


def load_checkpoint(path, model, optimizer, scaler):
    model.set_state_dict(paddle.load(os.path.join(path, "model_state.pdparams")))
    saved = paddle.load(os.path.join(path, "optimizer.pdopt"))
    optimizer.set_state_dict(_optimizer_state_by_structure(model, saved, to_internal=True))
    if scaler is not None and os.path.exists(os.path.join(path, "scaler.pdparams")):
        scaler.load_state_dict(paddle.load(os.path.join(path, "scaler.pdparams")))
    rng = paddle.load(os.path.join(path, "rng_state.pdparams"))
    paddle.set_rng_state(rng["paddle"])
    if rng.get("cuda") is not None and paddle.is_compiled_with_cuda():
        paddle.set_cuda_rng_state(rng["cuda"])
    with open(os.path.join(path, TRAINER_STATE)) as f:
        state = json.load(f)
    np.random.set_state(tuple(state["numpy_rng"]))
    random.setstate(_tuple_deep(state["python_rng"]))
    return state


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
    tmp = path.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
