"""Who may write into a training run's --output_dir: one run at a time, never two runs mixed.

A run's outputs (``RUN_OUTPUTS``) in a directory belong to one run. A new run into a directory that
holds another run's outputs would append to its metrics, keep its checkpoints (so a later
``--resume latest`` continues the wrong run) and replace its best model by a worse one. So a run
starts only into a directory without a run's outputs, continues one with ``--resume`` (with the same
training settings, unless it says otherwise), or clears the old outputs first with
``--overwrite_output_dir``. Files that are not a run's outputs (the launcher's workerlog.N in the same
directory, predictions written next to the run) are neither counted nor deleted.

While a run is alive it holds an exclusive lock on ``<output_dir>/.lock``; the kernel drops the lock
when the process ends, however it ends, so a crashed run never leaves a stale lock behind. It is a
POSIX record lock, which belongs to the process: its forked loader workers do not hold it too (a
``flock`` would be shared with them through the inherited descriptor, and kept alive by them).
"""
import errno
import fcntl
import fnmatch
import json
import os
import shutil

# what engine.train and visualbert.plot write into an output dir
RUN_OUTPUTS = ("run_config.json", "metrics.jsonl", "checkpoint-*", ".tmp-checkpoint-*", "best", "best.tmp",
               "model", "model.tmp", "visualdl", "metrics.png", "answer_vocab.txt")
LOCK_FILE = ".lock"
RUN_CONFIG = "run_config.json"
# run_config.json keys that may change on --resume without changing a single optimizer step: where
# things are, how often to log, save and evaluate (but not --eval_split: its questions are taken out
# of training), how many loader workers, and the initial model (the checkpoint replaces it)
RESUMABLE_CHANGES = {
    "output_dir", "resume", "overwrite_output_dir", "allow_changed_settings", "argv", "paddle_version",
    "setting_changes", "input_dir", "annotation_dir", "num_workers", "logging_steps", "save_steps",
    "save_total_limit", "eval_steps", "eval_batch_size", "max_eval_samples", "visualdl", "device",
    "model_name_or_path", "model_type",
}


class RunDirError(Exception):
    """The output dir cannot be used as asked; the message is one line for the user."""


def run_outputs(output_dir):
    """Names of the entries in ``output_dir`` that a training run wrote, sorted."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(name for name in os.listdir(output_dir) if any(fnmatch.fnmatch(name, p) for p in RUN_OUTPUTS))


def clear_run_outputs(output_dir):
    for name in run_outputs(output_dir):
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


class OutputDirLock:
    """An exclusive POSIX record lock (``lockf``) on ``<output_dir>/.lock`` that names its holder's pid.

    The file is left in place when released: deleting it would let a process that opened the old
    file and one that creates a new one both believe they hold the lock. A POSIX lock is dropped when
    its process closes any descriptor of the file, so nothing else in the process opens it.
    """

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(f"{os.path.dirname(self.path)} is in use by another training run (pid {holder}); "
                              "wait for it to end or pick another --output_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None


def check_use(output_dir, resume, overwrite):
    """Raise RunDirError when a run with these flags must not start in ``output_dir``. Cheap and
    read-only, so scripts call it before loading any data too (see ``environment.setup_device``)."""
    if resume and overwrite:
        raise RunDirError("--resume continues the run in --output_dir and --overwrite_output_dir deletes it; "
                          "pass one of them")
    found = run_outputs(output_dir)
    resumes_here = resume == "latest" or (
        resume is not None and os.path.realpath(os.path.dirname(os.path.abspath(resume))) == os.path.realpath(output_dir))
    if found and not resumes_here and not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise RunDirError(f"{output_dir} already holds a training run ({shown}); pass --resume latest to continue "
                          "it, --overwrite_output_dir to delete it and start over, or another --output_dir")


def check_output_dir(output_dir, config, resume, overwrite, allow_changed_settings):
    """Decide, under the lock, whether this run may use ``output_dir``; clears it for ``overwrite``.

    ``config`` is the run's run_config.json as it will be written. Returns the settings that changed
    since the run being resumed ({key: [saved, now]}, empty when none or not resuming); raises
    RunDirError when the run must not start.
    """
    check_use(output_dir, resume, overwrite)
    if overwrite:
        clear_run_outputs(output_dir)
    if resume is None:
        return {}
    saved_path = os.path.join(output_dir if resume == "latest" else os.path.dirname(os.path.abspath(resume)), RUN_CONFIG)
    if not os.path.isfile(saved_path):
        return {}
    with open(saved_path) as f:
        saved = json.load(f)
    changes = settings_changes(saved, config)
    if changes and not allow_changed_settings:
        listed = ", ".join(f"{k} {_show(old)} -> {_show(new)}" for k, (old, new) in changes.items())
        raise RunDirError(f"--resume: training settings differ from {saved_path}: {listed}; resume with the saved "
                          "settings, or pass --allow_changed_settings to continue with the new ones")
    return changes


def settings_changes(saved, now):
    """{key: [saved value, current value]} for the settings that shape the training trajectory."""
    now = json.loads(json.dumps(now, default=str))  # the types json gives back, as in the saved file
    # a key only one side has is a flag added or removed between versions, not a changed setting
    keys = (saved.keys() & now.keys()) - RESUMABLE_CHANGES
    return {k: [saved.get(k), now.get(k)] for k in sorted(keys) if saved.get(k) != now.get(k)}


def _show(value):
    return json.dumps(value, default=str)
