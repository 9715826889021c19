"""Where a run executes and writes: the device and process group, seeds, which rank prints, and the
output paths, checked before any work and owned by rank 0 for the whole training run."""
import contextlib
import json
import os
import random
import tempfile

import numpy as np
import paddle
import paddle.distributed as dist
from paddlenlp.utils.log import logger as paddlenlp_logger

from . import quiet, rundir


def setup_device(args):
    """Pick the device, start the process group under paddle.distributed.launch, seed everything."""
    paddlenlp_logger.set_level("WARNING")  # its per-save INFO lines drown the progress bar
    device = args.device
    if device == "auto":
        device = "gpu" if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else "cpu"
    if device == "gpu" and not paddle.is_compiled_with_cuda():
        raise SystemExit("error: --device gpu, but this paddle build has no CUDA (install paddlepaddle-gpu)")
    if dist.get_world_size() > 1:
        # the launcher sets the visible device per rank; gloo serves CPU ranks
        paddle.set_device(f"gpu:{dist.ParallelEnv().dev_id}" if device == "gpu" else "cpu")
        with quiet.stderr_without(quiet.MODIFIED_FLAGS_LINES):
            dist.init_parallel_env()
    else:
        paddle.set_device(device)
    if args.use_amp and device != "gpu":
        log0("note: AMP needs a GPU; training in fp32 on CPU")
        args.use_amp = False
    check_output_paths(args)
    set_seed(args.seed)
    if getattr(args, "output_dir", None) and is_main() and os.path.isdir(args.output_dir):
        # refuse a used or busy --output_dir now rather than after loading the data; train() checks
        # again, under the lock it holds for the whole run
        try:
            rundir.OutputDirLock(args.output_dir).acquire().release()
            rundir.check_use(args.output_dir, args.resume, args.overwrite_output_dir)
        except (rundir.RunDirError, OSError) as e:
            raise SystemExit(f"error: {e}") from None
    return device


def check_output_paths(args):
    """Refuse an output that cannot be written (a file in the way, a read-only directory) before any
    work, not after hours of it: training's --output_dir, prediction's --output. Creates nothing."""
    for flag, path, wanted in (("--output_dir", getattr(args, "output_dir", None), "directory"),
                               ("--output", getattr(args, "output", None), "file")):
        if not path:
            continue
        if wanted == "directory" and os.path.exists(path) and not os.path.isdir(path):
            raise SystemExit(f"error: {flag} {path} is a file; expected a directory")
        if wanted == "file" and os.path.isdir(path):
            raise SystemExit(f"error: {flag} {path} is a directory; expected a file path")
        existing = os.path.abspath(path if wanted == "directory" else os.path.dirname(os.path.abspath(path)))
        while not os.path.exists(existing):  # what will be created lives in the nearest existing parent
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise SystemExit(f"error: {flag} {path}: {existing} is a file, not a directory")
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as e:
            raise SystemExit(f"error: {flag} {path}: cannot write to {existing} ({e.strerror or e})") from None


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def is_main():
    return dist.get_rank() == 0


def log0(*msg):
    if is_main():
        print(*msg, flush=True)


def global_sum(values):
    """Sum a small list of numbers over ranks (with one process: no tensor, no device round trip)."""
    if dist.get_world_size() == 1:
        return np.asarray(values, dtype="float64").tolist()
    t = paddle.to_tensor(np.asarray(values, dtype="float64"))
    dist.all_reduce(t)
    return t.numpy().tolist()


@contextlib.contextmanager
def own_output_dir(args, config, run_files):
    """Rank 0 locks --output_dir for the run's lifetime and checks that this run may write there
    (see ``rundir``); every rank stops when it may not. Settings that --resume changes (with
    --allow_changed_settings) are added to ``config["setting_changes"]``."""
    error, lock, changes = None, None, {}
    if is_main():
        try:
            os.makedirs(args.output_dir, exist_ok=True)
            lock = rundir.OutputDirLock(args.output_dir).acquire()
            changes = rundir.check_output_dir(args.output_dir, config, args.resume, args.overwrite_output_dir,
                                              args.allow_changed_settings)
            saved = os.path.join(args.output_dir, rundir.RUN_CONFIG)
            if changes:  # appended to the record of earlier changes
                earlier = []
                if os.path.isfile(saved):
                    with open(saved) as f:
                        earlier = json.load(f).get("setting_changes", [])
                config["setting_changes"] = earlier + [{"resume": args.resume, "changes": changes}]
            for name, write in run_files.items():
                write(os.path.join(args.output_dir, name))
        except (rundir.RunDirError, OSError) as e:
            error = f"error: {e}"
    if dist.get_world_size() > 1 and global_sum([error is not None])[0]:
        error = error or "error: rank 0 refused --output_dir (its log says why)"
    if error:
        if lock:
            lock.release()
        raise SystemExit(error)
    if changes:
        log0("warning: resuming with changed settings: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()))
    try:
        yield
    finally:
        if lock:
            lock.release()
