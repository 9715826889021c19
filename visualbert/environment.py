"""Where a run executes and writes: the device and process group, seeds, which rank prints, and the
output paths, checked before any work and owned by rank 0 for the whole training run."""
import contextlib
import fnmatch
import json
import os
import random
import tempfile

import numpy as np
import paddle
import paddle.distributed as dist
from paddlenlp.utils.log import logger as paddlenlp_logger

from . import quiet, rundir


def setup_device(args, task=None):
    """Pick the device, start the process group under paddle.distributed.launch, seed everything.

    ``args``: the run's ``TrainingArguments`` or ``PredictionArguments`` (the device, precision, seed
    and outputs); ``task``: its ``TaskArguments`` (the inputs no output may overwrite)."""
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
    check_output_paths(args, *([task] if task is not None else []))
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


def check_output_paths(*settings):
    """Refuse an output that cannot be written (a file in the way, a read-only directory) or must not be
    (an input of the run, the root or home directory) before any work, not after hours of it:
    training's --output_dir, prediction's --output. ``settings``: the run's settings objects, together
    naming its outputs and inputs. Creates nothing."""
    named = {name: value for s in settings for name, value in vars(s).items()}
    for flag, path, wanted in (("--output_dir", named.get("output_dir"), "directory"),
                               ("--output", named.get("output"), "file")):
        if not path:
            continue
        if wanted == "directory" and os.path.exists(path) and not os.path.isdir(path):
            raise SystemExit(f"error: {flag} {path} is a file; expected a directory")
        if wanted == "file" and os.path.isdir(path):
            raise SystemExit(f"error: {flag} {path} is a directory; expected a file path")
        try:
            check_not_input(flag, path, input_paths(*settings),
                            replaced=rundir.RUN_OUTPUTS if named.get("overwrite_output_dir") else None)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
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


# the flags (any --<set>_ prefix included) whose paths a command reads
_INPUT_FLAGS = ("model_name_or_path", "questions", "annotations", "answer_vocab", "features", "input_dir",
                "annotation_dir", "bert_model_name", "image_map", "resume", "config", "src", "image_dir", "boxes")


def input_paths(*settings):
    """[(flag, path)] of every input path the ``settings`` objects name that exists on disk."""
    found = []
    for name, value in sorted({name: value for s in settings for name, value in vars(s).items()}.items()):
        if isinstance(value, str) and name.endswith(_INPUT_FLAGS) and os.path.exists(value):
            found.append(("--" + name, value))
    return found


def check_not_input(flag, output, inputs, replaced=None):
    """Raise ValueError (one line) when writing ``output`` would destroy something the command did not write.

    ``output`` must not be the root or the home directory, nor one of ``inputs`` ([(flag, path)]).
    ``replaced``: for an output directory, the names (fnmatch patterns) of the entries the command
    deletes or replaces in it; no input may lie in one of them, nor be the directory itself (a run
    directory as --model_name_or_path is read from its model/). The one place outputs are checked
    against inputs: the scripts' --output_dir and --output, and convert's --dst. (Feature store writers
    need no such check: their output must not exist, and they write beside it until it is complete.)
    """
    real = os.path.realpath(output)
    for what, protected in (("the root directory", os.path.sep), ("your home directory", os.path.expanduser("~"))):
        if real == os.path.realpath(protected):
            raise ValueError(f"{flag} {output} is {what}; pick a directory of its own")
    for in_flag, path in inputs:
        source = os.path.realpath(path)
        if not os.path.isdir(real):
            if source == real:
                raise ValueError(f"{flag} {output} is the {in_flag} input; writing it would destroy it; "
                                 f"pick another {flag}")
            continue
        if replaced is None or not is_inside(source, real):
            continue
        entry = os.path.relpath(source, real).split(os.sep)[0]
        if entry == os.curdir or any(fnmatch.fnmatch(entry, pattern) for pattern in replaced):
            what = "its outputs" if entry == os.curdir else f"its {entry}"
            raise ValueError(f"{flag} {output}: {what} would be replaced, but {in_flag} {path} is read from there; "
                             f"copy the input elsewhere first or pick another {flag}")


def is_inside(path, directory):
    """Whether the real ``path`` is ``directory`` or lies below it."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


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
