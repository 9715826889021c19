"""Batches for training and prediction: the order of samples and the loader that reads them.

The order is a pure function of (seed, epoch), so a resumed run sees the same batches as an
uninterrupted one; an example that cannot be read ends the run with its one line, never a hang.
"""
import math
import os

import numpy as np
import paddle

from .lifetime import WorkerInit
from .inputs import ExampleError

# seconds the workers get to finish their batch and exit once the loader is done with them
WORKER_EXIT_SECONDS = 5


class EpochBatchSampler(paddle.io.Sampler):
    """This rank's share of each global batch, in an order fixed by (seed, epoch).

    Global batch g holds perm[g*B*W : (g+1)*B*W]; rank r takes its r-th slice of B. The last
    global batch is topped up by wrapping around so every rank gets the same number of batches.
    ``skip`` drops the batches a resumed run already consumed in this epoch.
    """

    def __init__(self, num_samples, batch_size, seed, rank=0, world_size=1, shuffle=True):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        if batch_size < 1:  # no batch would ever be drawn and an epoch would never end
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch, skip=0):
        self.epoch, self.skip = epoch, skip

    def global_batches(self):
        order = np.arange(self.num_samples)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        step = self.batch_size * self.world_size
        for start in range(0, self.num_samples, step):
            chunk = order[start:start + step]
            if len(chunk) % self.world_size:
                chunk = np.concatenate([chunk, order[: self.world_size - len(chunk) % self.world_size]])
            yield chunk

    def __iter__(self):
        for g, chunk in enumerate(self.global_batches()):
            if g >= self.skip:
                per_rank = len(chunk) // self.world_size
                yield chunk[self.rank * per_rank:(self.rank + 1) * per_rank].tolist()

    def __len__(self):
        return math.ceil(self.num_samples / (self.batch_size * self.world_size)) - self.skip


def make_loader(dataset, batch_sampler, collate_fn, num_workers):
    """Yield the batches of ``batch_sampler`` as Paddle tensors; an example that cannot be read
    (``ExampleError``: a truncated or malformed feature file) ends the run with its one-line message.

    Paddle's DataLoader cannot be left to report it: with ``num_workers=0`` the exception kills its
    reader thread and the main thread waits on the queue forever; with workers it is re-raised in
    that thread, and the main thread only learns that the queue was killed. So without workers the
    batches are built right here, and with workers a failed example travels to the main process as
    a batch that carries its message.
    """
    if num_workers == 0:
        batches = (_to_tensors(collate_fn([dataset[i] for i in indices])) for indices in batch_sampler)
    else:
        batches = iter(paddle.io.DataLoader(_ReportFailures(dataset), batch_sampler=batch_sampler,
                                            collate_fn=_CollateOrReport(collate_fn), num_workers=num_workers,
                                            persistent_workers=False, worker_init_fn=WorkerInit(),
                                            use_shared_memory=shared_memory_fits()))
    try:
        for batch in batches:
            if isinstance(batch, dict) and _FAILED in batch:
                raise ExampleError(batch[_FAILED])
            yield batch
    except ExampleError as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        if num_workers:
            _stop_workers(batches)


def _stop_workers(batches):
    """End the workers of Paddle's loader iterator ``batches`` now, however the loop ended.

    Left to Paddle, workers of a loop that stops early (``--max_steps`` mid-epoch, an error, Ctrl-C)
    live on until the iterator is garbage-collected or the interpreter exits, and are then killed
    while its watcher thread still runs: it prints ``DataLoader N workers exit unexpectedly``.
    """
    shutdown = getattr(batches, "_try_shutdown_all", None)
    if shutdown is not None:
        shutdown(WORKER_EXIT_SECONDS)
    for worker in getattr(batches, "_workers", []):
        if worker.is_alive():  # stuck past the grace period
            worker.kill()
            worker.join()


# Workers hand batches over through /dev/shm; a BERT-base batch of 64 x 100 regions of 2048 float32
# is ~52 MB and each worker keeps two in flight. Docker gives a container 64 MB unless told otherwise,
# where Paddle's workers die with a bus error: below this size batches go through a pipe instead.
MIN_SHM_BYTES = 1 << 30
_shm_said = []


def shared_memory_fits(path="/dev/shm"):
    """Whether loader workers may pass batches through shared memory; says once why not."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return True  # no /dev/shm to judge: Paddle's default
    size = stat.f_blocks * stat.f_frsize
    if size >= MIN_SHM_BYTES:
        return True
    if not _shm_said:
        _shm_said.append(path)
        print(f"note: {path} holds only {size / 2**20:.0f} MB (Docker's default is 64 MB), too little for the "
              "loader workers' batches; passing them through a pipe instead (slower). Give the container more "
              "(docker run --shm-size=8g, or --ipc=host)", flush=True)
    return False


_FAILED = "example_error"  # the one key of a batch that stands for an example that failed


class _ReportFailures(paddle.io.Dataset):
    """``dataset`` whose failed examples come back as reports (``{_FAILED: message, ...}``) instead of raising."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            return self.dataset[i]
        except ExampleError as e:
            # the index is there because Paddle's queue cannot carry a batch without any array
            return {_FAILED: str(e), "index": np.array([i], dtype=np.int64)}


class _CollateOrReport:
    """``collate_fn``, except that a batch holding a failed example becomes that example's report."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, samples):
        for s in samples:
            if isinstance(s, dict) and _FAILED in s:
                return s
        return self.collate_fn(samples)


def _to_tensors(batch):
    """What Paddle's DataLoader hands over: numpy arrays become tensors, strings and the like stay."""
    if isinstance(batch, np.ndarray):
        return paddle.to_tensor(batch)
    if isinstance(batch, dict):
        return {k: _to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [_to_tensors(v) for v in batch]
    return batch
