"""The one training loop every script uses.

Read ``train`` top to bottom: it is the whole story. Pieces around it are small helpers.

Two design choices make runs reproducible:
- The order of samples is a pure function of (seed, epoch) and every random choice inside a
  sample is a pure function of (seed, epoch, index) (see ``processing``). Resuming therefore only
  needs the model, optimizer, scheduler, scaler, dropout RNG and how far into the epoch we were.
- Each loss term is a mean over its own units (masked tokens, sentences, questions). With gradient
  accumulation and several ranks, averaging per-micro-batch means would weight units unevenly, so
  every micro-batch loss is weighted by its share of the units in the whole optimizer step. Then
  batch 8 x accumulation 2, batch 16, and 2 ranks x batch 8 all take exactly the same step.
"""
import contextlib
import functools
import inspect
import json
import math
import os
import random
import sys
import signal
import tempfile
import threading
import time

import numpy as np
import paddle
import paddle.distributed as dist
from paddlenlp.transformers import LinearDecayWithWarmup
from paddlenlp.utils.log import logger as paddlenlp_logger

from . import quiet, rundir
from .progress import Progress
from .checkpoint import list_checkpoints, resolve_resume, resume_checkpoint, save_checkpoint, save_model
from .cli import user_errors
from .cli import fraction, non_negative_float, non_negative_int, positive_float, positive_int, seed_int
from .processing import ExampleError


def add_training_args(parser, **defaults):
    """The flags every training script shares. ``defaults`` overrides per script."""
    g = parser.add_argument_group("training")
    g.add_argument("--output_dir", required=True, help="where checkpoints, metrics.jsonl and the final model go")
    g.add_argument("--num_train_epochs", type=non_negative_float, default=defaults.get("num_train_epochs", 3),
                   help="epochs to train (ignored when --max_steps > 0)")
    g.add_argument("--max_steps", type=int, default=-1,
                   help="optimizer steps to train; overrides --num_train_epochs when > 0")
    g.add_argument("--learning_rate", type=positive_float, default=defaults.get("learning_rate", 2e-5),
                   help="peak learning rate")
    g.add_argument("--weight_decay", type=non_negative_float, default=0.01,
                   help="AdamW weight decay (not on bias and LayerNorm)")
    g.add_argument("--adam_epsilon", type=positive_float, default=1e-6, help="AdamW epsilon")
    g.add_argument("--warmup_proportion", type=fraction, default=defaults.get("warmup_proportion", 0.1),
                   help="share of optimizer steps spent warming up linearly, in [0, 1]")
    g.add_argument("--warmup_steps", type=non_negative_int, default=0,
                   help="warmup length in optimizer steps; overrides --warmup_proportion")
    g.add_argument("--max_grad_norm", type=non_negative_float, default=1.0, help="global-norm gradient clipping (0 = off)")
    g.add_argument("--gradient_accumulation_steps", type=positive_int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--logging_steps", type=positive_int, default=defaults.get("logging_steps", 20),
                   help="write a metrics.jsonl line every N optimizer steps (and a progress line when the "
                        "output is not a terminal)")
    g.add_argument("--save_steps", type=positive_int, default=defaults.get("save_steps", 1000),
                   help="write a checkpoint every N optimizer steps (and always at the end)")
    g.add_argument("--save_total_limit", type=non_negative_int, default=3,
                   help="keep only the newest K checkpoints (default 3; 0 = keep all)")
    g.add_argument("--eval_steps", type=non_negative_int, default=0,
                   help="evaluate every N optimizer steps (0 = once per epoch)")
    g.add_argument("--seed", type=seed_int, default=42, help="seed for initialisation, shuffling, masking and dropout")
    g.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], help="auto = gpu when available")
    g.add_argument("--use_amp", action="store_true", help="mixed precision (GPU only; ignored with a note on CPU)")
    g.add_argument("--amp_dtype", default="float16", choices=["float16", "bfloat16"],
                   help="AMP compute dtype; float16 uses dynamic loss scaling")
    g.add_argument("--num_workers", type=non_negative_int, default=2,
                   help="DataLoader worker processes (0 = load in the training process)")
    g.add_argument("--resume", default=None, metavar="DIR|latest",
                   help="continue from a checkpoint dir, or the newest complete one in --output_dir "
                        "(the training settings must match the saved run_config.json)")
    g.add_argument("--overwrite_output_dir", action="store_true",
                   help="delete the training run already in --output_dir (checkpoints, metrics, models) and "
                        "start over; without it (or --resume) such a directory is refused")
    g.add_argument("--allow_changed_settings", action="store_true",
                   help="with --resume: continue although training settings (batch size, learning rate, "
                        "steps, data, world size, ...) differ from the saved ones; run_config.json records "
                        "the changes, and the run no longer matches an uninterrupted one")
    g.add_argument("--visualdl", action="store_true", help="also log scalars to VisualDL in <output_dir>/visualdl")
    return parser


def check_training_args(parser, args):
    """What no single flag's type can say; call after parsing (ends with argparse's usage line)."""
    if args.max_steps <= 0 and args.num_train_epochs == 0:
        parser.error("--num_train_epochs must be > 0 unless --max_steps > 0 sets the length")
    return args


# ---------------------------------------------------------------------------- environment


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


# ---------------------------------------------------------------------------- data order


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
        batches = paddle.io.DataLoader(_ReportFailures(dataset), batch_sampler=batch_sampler,
                                       collate_fn=_CollateOrReport(collate_fn), num_workers=num_workers,
                                       persistent_workers=False)
    try:
        for batch in batches:
            if isinstance(batch, dict) and _FAILED in batch:
                raise ExampleError(batch[_FAILED])
            yield batch
    except ExampleError as e:
        raise SystemExit(f"error: {e}") from None


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


# ---------------------------------------------------------------------------- optimisation


def build_optimizer(model, args, total_steps):
    warmup = args.warmup_steps if args.warmup_steps > 0 else args.warmup_proportion
    scheduler = LinearDecayWithWarmup(args.learning_rate, total_steps, warmup)
    # BERT convention: no weight decay on biases and LayerNorm parameters
    decay = {p.name for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n or "norm" in n)}
    optimizer = paddle.optimizer.AdamW(
        learning_rate=scheduler, parameters=model.parameters(), weight_decay=args.weight_decay,
        epsilon=args.adam_epsilon, apply_decay_param_fun=lambda name: name in decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(args.max_grad_norm) if args.max_grad_norm > 0 else None,
    )
    return optimizer, scheduler


def allreduce_gradients(model):
    """Sum gradients over ranks in one flat buffer (the losses are already weighted globally)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = paddle.concat([g.reshape([-1]) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        n = int(np.prod(g.shape))
        g.set_value(flat[offset:offset + n].reshape(g.shape))
        offset += n


def rank_drift(model):
    """Largest difference between ranks of each parameter's sum and sum of squares (0 = in sync)."""
    stats = paddle.stack([paddle.stack([p.astype("float64").sum(), (p.astype("float64") ** 2).sum()])
                          for p in model.parameters()])
    gathered = []
    dist.all_gather(gathered, stats)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


def global_sum(values):
    """Sum a small list of numbers over ranks."""
    t = paddle.to_tensor(np.asarray(values, dtype="float64"))
    if dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.numpy().tolist()


def model_kwargs(model, batch, extra):
    """The batch keys model.forward accepts, plus per-script extras."""
    accepted = inspect.signature(model.forward).parameters
    kwargs = {k: v for k, v in batch.items() if k in accepted and isinstance(v, paddle.Tensor)}
    if "visual_embeds" in kwargs and kwargs["visual_embeds"].dtype == paddle.float16:
        # --feature_dtype float16 halves what the loader hands over; the model computes in fp32 (or AMP)
        kwargs["visual_embeds"] = kwargs["visual_embeds"].astype("float32")
    kwargs.update(extra or {})
    return kwargs


# ---------------------------------------------------------------------------- the loop


def _stops_in_one_line(train_fn):
    """Ctrl-C, a full disk or a bad file met while training end the run with one line. Nothing
    on disk is lost: checkpoints are renamed into place only once complete, so the last one loads.

    Ctrl-C is recognised by its signal, not by the exception type: Paddle hands a KeyboardInterrupt
    raised inside an operator's backward back as its own error type.
    """

    @functools.wraps(train_fn)
    def run(args, *a, **kw):
        interrupted = []

        def on_sigint(signum, frame):
            interrupted.append(signum)
            raise KeyboardInterrupt

        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
        try:
            with user_errors():
                return train_fn(args, *a, **kw)
        except BaseException as e:
            from tqdm import tqdm as bars  # the class keeps every open bar

            for bar in list(bars._instances):  # end a progress bar's line, so the message gets its own
                bar.close()
            if not (interrupted or isinstance(e, KeyboardInterrupt)):
                raise
            ckpts = list_checkpoints(args.output_dir)
            last = f"last checkpoint {ckpts[-1]} (continue with --resume latest)" if ckpts else "no checkpoint was written yet"
            print(f"stopped: interrupted (SIGINT); {last}", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        finally:
            if in_main_thread:
                signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)

    return run


@_stops_in_one_line
def train(args, model, train_dataset, collate_fn, loss_terms, evaluate=None, best_metric=None,
          forward_kwargs=None, run_files=None):
    """Train ``model`` on ``train_dataset``; returns the last evaluation's metrics (or {}).

    loss_terms: {output field: fn(batch) -> number of units that field's mean is over}, e.g.
        {"masked_lm_loss": count of masked tokens, "sentence_image_loss": batch size}.
    evaluate: fn(model) -> {name: value}; runs every --eval_steps and at each epoch's end.
    best_metric: the key of evaluate's result that decides <output_dir>/best (higher is better).
    run_files: {file name: fn(path)} written into --output_dir by rank 0 once the run owns it
        (e.g. the answer vocabulary prediction reads); list them in ``rundir.RUN_OUTPUTS``.
    """
    world = dist.get_world_size()
    batches_per_epoch = math.ceil(len(train_dataset) / (args.train_batch_size * world))
    if batches_per_epoch == 0:
        raise SystemExit("error: the training set is empty")
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    if args.max_steps > 0:
        total_steps = args.max_steps
    else:
        total_steps = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    config = dict(vars(args), total_steps=total_steps, steps_per_epoch=steps_per_epoch, world_size=world,
                  argv=sys.argv, paddle_version=paddle.__version__)
    with _own_output_dir(args, config, run_files or {}):
        return _train(args, config, batches_per_epoch, model, train_dataset, collate_fn, loss_terms, evaluate,
                      best_metric, forward_kwargs)


@contextlib.contextmanager
def _own_output_dir(args, config, run_files):
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


def _train(args, config, batches_per_epoch, model, train_dataset, collate_fn, loss_terms, evaluate, best_metric,
           forward_kwargs):
    world, rank = dist.get_world_size(), dist.get_rank()
    total_steps = config["total_steps"]
    sampler = EpochBatchSampler(len(train_dataset), args.train_batch_size, args.seed, rank, world)
    optimizer, scheduler = build_optimizer(model, args, total_steps)
    scaler = None
    if args.use_amp and args.amp_dtype == "float16":
        scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15)

    step, epoch, batches_done, best = 0, 0, 0, None
    resume_from, state = resume_checkpoint(args.resume, args.output_dir, model, optimizer, scaler)
    if resume_from:
        step, epoch, batches_done, best = state["step"], state["epoch"], state["batches_done"], state.get("best")
        log0(f"resumed from {resume_from}: step {step}, epoch {epoch}, batch {batches_done}")
    elif world > 1:
        for p in model.parameters():  # identical start on every rank whatever the init RNG did
            dist.broadcast(p, src=0)

    metrics_path = os.path.join(args.output_dir, "metrics.jsonl")
    writer = None
    if is_main():
        _truncate_metrics(metrics_path, step)
        with open(os.path.join(args.output_dir, rundir.RUN_CONFIG), "w") as f:
            json.dump(config, f, indent=1, default=str)
        if args.visualdl:
            from visualdl import LogWriter
            writer = LogWriter(logdir=os.path.join(args.output_dir, "visualdl"))
    log0(f"training: {len(train_dataset)} samples, {world} rank(s) x batch {args.train_batch_size} x "
         f"accumulation {args.gradient_accumulation_steps}, {total_steps} optimizer steps")

    amp_ctx = lambda: paddle.amp.auto_cast(enable=args.use_amp, dtype=args.amp_dtype, level="O1")  # noqa: E731
    progress = Progress("train", "step", total_steps, initial=step)
    window = LossWindow(list(loss_terms))
    no_loss = paddle.zeros([], dtype="float32")
    last_eval = {}
    model.train()
    while step < total_steps:
        if hasattr(train_dataset, "set_epoch"):
            train_dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip=batches_done)
        it = iter(make_loader(train_dataset, sampler, collate_fn, args.num_workers))
        while step < total_steps:
            micro = _take(it, args.gradient_accumulation_steps)
            if not micro:
                break
            # every loss term's units in the whole optimizer step, over all ranks
            local_units = [[float(fn(b)) for fn in loss_terms.values()] for b in micro]
            totals = global_sum(np.sum(local_units, axis=0))
            step_terms = paddle.zeros([len(loss_terms)], dtype="float32")  # stays on the device
            for b, units in zip(micro, local_units):
                with amp_ctx():
                    out = model(**model_kwargs(model, b, forward_kwargs))
                weighted = [out[name].astype("float32") * (n / total) if n > 0 else None
                            for name, n, total in zip(loss_terms, units, totals)]
                if all(w is None for w in weighted):
                    continue
                loss = sum(w for w in weighted if w is not None)
                step_terms = step_terms + paddle.stack([no_loss if w is None else w.detach() for w in weighted])
                (scaler.scale(loss) if scaler else loss).backward()
            if world > 1:
                allreduce_gradients(model)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.clear_grad()
            lr = scheduler.get_lr()
            scheduler.step()
            step += 1
            batches_done += len(micro)
            progress.update()
            window.add(step, epoch, step_terms, sum(len(_first_tensor(b)) for b in micro) * world)

            epoch_done = batches_done >= batches_per_epoch
            log_now = step % args.logging_steps == 0 or step == total_steps
            eval_now = evaluate and ((args.eval_steps and step % args.eval_steps == 0) or
                                     (not args.eval_steps and epoch_done) or step == total_steps)
            save_now = step % args.save_steps == 0 or step == total_steps
            if log_now or eval_now or save_now:
                # reading the losses waits for the device: only here, and always before anything is saved
                bad = window.sync()
                if bad:
                    ckpts = list_checkpoints(args.output_dir)
                    raise SystemExit(f"error: non-finite loss at step {bad[0]} (epoch {bad[1]}); stopping. "
                                     f"Last good checkpoint: {ckpts[-1] if ckpts else 'none'}")
            if log_now:
                losses, samples_per_second = window.flush()
                record = {"step": step, "epoch": round(epoch + batches_done / batches_per_epoch, 4), "lr": lr,
                          "loss": sum(losses.values()), **({} if list(losses) == ["loss"] else losses),
                          "samples_per_second": round(samples_per_second, 2)}
                _log_metrics(metrics_path, writer, record)
                progress.show(step, _progress_fields(record, losses))

            if eval_now:
                last_eval, best = _evaluate(args, model, evaluate, best_metric, best, step, epoch,
                                            metrics_path, writer, progress)
            state = {"step": step, "epoch": epoch + epoch_done, "batches_done": 0 if epoch_done else batches_done,
                     "best": best}
            if is_main() and save_now:
                save_checkpoint(args.output_dir, step, model, optimizer, scaler, state, args.save_total_limit)
            if epoch_done:
                break
        epoch, batches_done = epoch + 1, 0
    progress.close()
    if world > 1:
        drift = rank_drift(model)
        _log_metrics(metrics_path, writer, {"step": step, "rank_param_drift": drift})
        if drift > 1e-4:
            log0(f"warning: parameters differ across ranks by up to {drift:.3g}; data-parallel training went out of sync")
    if is_main():
        save_model(model, os.path.join(args.output_dir, "model"))
        log0(f"done: {step} steps; model saved to {os.path.join(args.output_dir, 'model')}")
    if writer:
        writer.close()
    if world > 1:
        dist.barrier()
    return last_eval


class LossWindow:
    """The loss terms of the optimizer steps since the last metrics line.

    They stay on the device: reading a number to the host waits for all queued device work, so
    ``sync`` does that once for the whole window (and sums over ranks in one all-reduce) instead of
    once per micro-batch.
    """

    def __init__(self, names):
        self.names = names
        self.pending = []  # (step, epoch, device tensor of this step's terms), not read yet
        self.sums, self.steps, self.samples, self.start = np.zeros(len(names)), 0, 0, time.time()

    def add(self, step, epoch, terms, samples):
        self.pending.append((step, epoch, terms))
        self.samples += samples

    def sync(self):
        """Read the pending steps (summed over ranks); returns (step, epoch) of the first non-finite one, or None."""
        if not self.pending:
            return None
        values = paddle.stack([terms for _, _, terms in self.pending])
        if dist.get_world_size() > 1:
            dist.all_reduce(values)
        values = values.numpy().astype("float64")
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            step, epoch, _ = self.pending[int(np.argmin(finite))]
            return step, epoch
        self.sums += values.sum(axis=0)
        self.steps += len(values)
        self.pending = []
        return None

    def flush(self):
        """Mean of each term per step and samples per second since the last flush; starts a new window."""
        self.sync()
        losses = {name: float(total / max(self.steps, 1)) for name, total in zip(self.names, self.sums)}
        speed = self.samples / max(time.time() - self.start, 1e-9)
        self.__init__(self.names)
        return losses, speed


def _progress_fields(record, losses):
    fields = {"loss": f"{record['loss']:.4g}"}
    if len(losses) > 1:
        fields.update({k: f"{v:.4g}" for k, v in losses.items()})
    fields.update(lr=f"{record['lr']:.3g}", samples_per_s=f"{record['samples_per_second']:.4g}")
    return fields


def _evaluate(args, model, evaluate, best_metric, best, step, epoch, metrics_path, writer, progress):
    model.eval()
    with paddle.no_grad():
        result = evaluate(model)
    model.train()
    record = {"step": step, "epoch": epoch, **{f"eval_{k}": v for k, v in result.items()}}
    _log_metrics(metrics_path, writer, record)
    progress.write(f"eval at step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in result.items()))
    if best_metric is not None and (best is None or result[best_metric] > best):
        best = result[best_metric]
        if is_main():
            save_model(model, os.path.join(args.output_dir, "best"))
            with open(os.path.join(args.output_dir, "best", "eval_results.json"), "w") as f:
                json.dump({"step": step, **result}, f, indent=1)
    return result, best


def _take(it, n):
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def _first_tensor(batch):
    return next(v for v in batch.values() if isinstance(v, paddle.Tensor))


def _log_metrics(path, writer, record):
    if not is_main():
        return
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer:
        for k, v in record.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)):
                writer.add_scalar(k, v, record["step"])


def _truncate_metrics(path, step):
    """On resume, drop log lines from steps the resumed run will redo (and a torn last line)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("step", 0) <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
    with open(path, "w") as f:
        f.writelines(keep)


# ---------------------------------------------------------------------------- evaluation helpers

# in a log file, an evaluation shows its progress in at most this many lines (plus its last), and a
# short one only in its last
PREDICT_LINES, PREDICT_LINE_SECONDS = 10, 30


def predict(model, dataset, collate_fn, batch_size, step_fn, num_workers=0, desc="eval"):
    """Run ``step_fn(model, batch) -> list of per-sample results`` over this rank's shard of
    ``dataset`` and return every sample's result in dataset order, on every rank."""
    world, rank = dist.get_world_size(), dist.get_rank()
    indices = list(range(rank, len(dataset), world))
    shard = paddle.io.Subset(dataset, indices)
    sampler = paddle.io.BatchSampler(shard, batch_size=batch_size, shuffle=False)
    loader = make_loader(shard, sampler, collate_fn, num_workers)
    mine = []
    was_training = model.training
    model.eval()
    num_batches = len(sampler)  # the loader is a generator
    progress = Progress(desc, "batch", num_batches, leave=False)
    every = max(1, math.ceil(num_batches / PREDICT_LINES))
    with paddle.no_grad():
        for i, batch in enumerate(loader, 1):
            mine.extend(step_fn(model, batch))
            progress.update()
            if i == num_batches:
                progress.show(i)
            elif i % every == 0:
                progress.show(i, at_most_every=PREDICT_LINE_SECONDS)
    progress.close()
    if was_training:
        model.train()
    if world == 1:
        return mine
    gathered = []
    dist.all_gather_object(gathered, mine)
    out = [None] * len(dataset)
    for r, results in enumerate(gathered):
        for i, res in zip(range(r, len(dataset), world), results):
            out[i] = res
    return out
