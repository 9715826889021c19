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
import functools
import inspect
import json
import math
import os
import sys
import time

import numpy as np
import paddle
import paddle.distributed as dist
from paddlenlp.transformers import LinearDecayWithWarmup

from . import rundir
from .checkpoint import (gather_rng_states, list_checkpoints, resume_checkpoint, save_checkpoint, save_model,
                         update_trainer_state)
from .environment import is_main, log0, own_output_dir
from .lifetime import interrupts_in_one_line
from .errors import user_errors
from .batches import EpochBatchSampler, make_loader
from .progress import Progress
from .training_args import TrainingArguments


# ---------------------------------------------------------------------------- optimisation


def build_optimizer(model, training, total_steps):
    warmup = training.warmup_steps if training.warmup_steps > 0 else training.warmup_proportion
    scheduler = LinearDecayWithWarmup(training.learning_rate, total_steps, warmup)
    # BERT convention: no weight decay on biases and LayerNorm parameters
    decay = {p.name for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n or "norm" in n)}
    optimizer = paddle.optimizer.AdamW(
        learning_rate=scheduler, parameters=model.parameters(), weight_decay=training.weight_decay,
        epsilon=training.adam_epsilon, apply_decay_param_fun=lambda name: name in decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(training.max_grad_norm) if training.max_grad_norm > 0 else None,
    )
    return optimizer, scheduler


def allreduce_gradients(model):
    """Sum gradients over ranks in one flat buffer (the losses are already weighted globally).

    Every rank reduces the same list, every trainable parameter, in the same order: a rank whose
    batches had nothing to learn from (no masked token) has no gradient for some or all of them and
    contributes zeros, where skipping them would mismatch the buffers or leave the others waiting.
    """
    params = [p for p in model.parameters() if not p.stop_gradient]
    if not params:
        return
    flat = paddle.concat([(p.grad if p.grad is not None else paddle.zeros(p.shape, dtype=p.dtype)).reshape([-1])
                          for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = int(np.prod(p.shape))
        reduced = flat[offset:offset + n].reshape(p.shape)
        if p.grad is None:
            p._set_grad_ivar(reduced.clone())
        else:
            p.grad.set_value(reduced)
        offset += n


def rank_drift(model):
    """Largest difference between ranks of each parameter's sum and sum of squares (0 = in sync)."""
    stats = paddle.stack([paddle.stack([p.astype("float64").sum(), (p.astype("float64") ** 2).sum()])
                          for p in model.parameters()])
    gathered = []
    dist.all_gather(gathered, stats)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


def autocast(training):
    """The precision of training's forward passes, and of the evaluations made while training."""
    return paddle.amp.auto_cast(enable=training.use_amp, dtype=training.amp_dtype, level="O1")


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

LOSS_UNITS = "loss_units"  # the batch key CountLossUnits adds


class CountLossUnits:
    """``collate_fn``, plus the units of each loss term counted on the batch's numpy arrays (under
    ``LOSS_UNITS``, plain floats, which the loader hands over as they are) before any tensor is made.

    loss_terms: {name: fn(batch) -> units}; each fn must work on numpy arrays (``len``, ``.sum()``).
    """

    def __init__(self, collate_fn, loss_terms):
        self.collate_fn, self.counts = collate_fn, list(loss_terms.values())

    def __call__(self, samples):
        batch = self.collate_fn(samples)
        batch[LOSS_UNITS] = [float(count(batch)) for count in self.counts]
        return batch


def _stops_in_one_line(train_fn):
    """Ctrl-C, a full disk or a bad file met while training end the run with one line. Nothing
    on disk is lost: checkpoints are renamed into place only once complete, so the last one loads,
    and the line names it."""

    @functools.wraps(train_fn)
    def run(training, *a, **kw):
        def last_checkpoint():
            ckpts = list_checkpoints(training.output_dir)
            return (f"last checkpoint {ckpts[-1]} (continue with --resume latest)" if ckpts
                    else "no checkpoint was written yet")

        with interrupts_in_one_line(after=last_checkpoint), user_errors():
            return train_fn(training, *a, **kw)

    return run


@_stops_in_one_line
def train(training, model, train_dataset, collate_fn, loss_terms, scorer=None, best_metric=None,
          forward_kwargs=None, run_files=None, settings=None):
    """Train ``model`` on ``train_dataset`` as ``training`` (a ``TrainingArguments``) says; returns the
    last evaluation's metrics (or {}).

    loss_terms: {output field: fn(batch) -> number of units that field's mean is over}, e.g.
        {"masked_lm_loss": count of masked tokens, "sentence_image_loss": batch size}; called on the
        collated numpy batch (see ``CountLossUnits``).
    scorer: fn(model) -> {name: value}; runs every --eval_steps and at each epoch's end.
    best_metric: the key of scorer's result that decides <output_dir>/best (higher is better).
    run_files: {file name: fn(path)} written into --output_dir by rank 0 once the run owns it
        (e.g. the answer vocabulary prediction reads); list them in ``rundir.RUN_OUTPUTS``.
    settings: the task's own settings ({name: value}: data, model, feature provenance), recorded with
        the training ones in run_config.json and compared with them on --resume.
    """
    if not isinstance(training, TrainingArguments):
        raise TypeError(f"engine.train takes a TrainingArguments, not {type(training).__name__}")
    world = dist.get_world_size()
    batches_per_epoch = math.ceil(len(train_dataset) / (training.train_batch_size * world))
    if batches_per_epoch == 0:
        raise SystemExit("error: the training set is empty")
    steps_per_epoch = math.ceil(batches_per_epoch / training.gradient_accumulation_steps)
    if training.max_steps > 0:
        total_steps = training.max_steps
    else:
        total_steps = max(1, math.ceil(training.num_train_epochs * steps_per_epoch))
    config = dict(settings or {}, **training.to_dict(), total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                  world_size=world, argv=sys.argv, paddle_version=paddle.__version__)
    with own_output_dir(training, config, run_files or {}):
        return _train(training, config, batches_per_epoch, model, train_dataset, collate_fn, loss_terms, scorer,
                      best_metric, forward_kwargs)


def _train(training, config, batches_per_epoch, model, train_dataset, collate_fn, loss_terms, scorer, best_metric,
           forward_kwargs):
    world, rank = dist.get_world_size(), dist.get_rank()
    total_steps = config["total_steps"]
    sampler = EpochBatchSampler(len(train_dataset), training.train_batch_size, training.seed, rank, world)
    optimizer, scheduler = build_optimizer(model, training, total_steps)
    scaler = None
    if training.use_amp and training.amp_dtype == "float16":
        scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15)

    step, epoch, batches_done, best = 0, 0, 0, None
    # ranks draw different dropout masks: each rank's generators continue from seed + rank (the
    # checkpoint keeps every rank's own state, so a resume continues each of them exactly)
    dropout_seed = training.seed + rank
    resume_from, state = resume_checkpoint(training.resume, training.output_dir, model, optimizer, scaler, dropout_seed)
    if resume_from:
        step, epoch, batches_done, best = state["step"], state["epoch"], state["batches_done"], state.get("best")
        log0(f"resumed from {resume_from}: step {step}, epoch {epoch}, batch {batches_done}")
    else:
        if world > 1:
            for p in model.parameters():  # identical start on every rank whatever the init RNG did
                dist.broadcast(p, src=0)
        paddle.seed(dropout_seed)

    metrics_path = os.path.join(training.output_dir, "metrics.jsonl")
    writer = None
    if is_main():
        _truncate_metrics(metrics_path, step)
        with open(os.path.join(training.output_dir, rundir.RUN_CONFIG), "w") as f:
            json.dump(config, f, indent=1, default=str)
        if training.visualdl:
            from visualdl import LogWriter
            writer = LogWriter(logdir=os.path.join(training.output_dir, "visualdl"))
    log0(f"training: {len(train_dataset)} samples, {world} rank(s) x batch {training.train_batch_size} x "
         f"accumulation {training.gradient_accumulation_steps}, {total_steps} optimizer steps")

    progress = Progress("train", "step", total_steps, initial=step)
    window = LossWindow(list(loss_terms))
    no_loss = paddle.zeros([], dtype="float32")
    last_eval = {}
    model.train()
    while step < total_steps:
        if hasattr(train_dataset, "set_epoch"):
            train_dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip=batches_done)
        it = iter(make_loader(train_dataset, sampler, CountLossUnits(collate_fn, loss_terms), training.num_workers))
        while step < total_steps:
            micro = _take(it, training.gradient_accumulation_steps)
            if not micro:
                break
            # every loss term's units in the whole optimizer step, over all ranks (counted on the
            # host when the batch was made: reading them from the device would wait for it each step)
            local_units = [b.pop(LOSS_UNITS) for b in micro]
            totals = _step_totals(np.sum(local_units, axis=0), world)
            step_terms = paddle.zeros([len(loss_terms)], dtype="float32")  # stays on the device
            for b, units in zip(micro, local_units):
                with autocast(training):
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
            log_now = step % training.logging_steps == 0 or step == total_steps
            eval_now = scorer and ((training.eval_steps and step % training.eval_steps == 0) or
                                     (not training.eval_steps and epoch_done) or step == total_steps)
            save_now = step % training.save_steps == 0 or step == total_steps
            if log_now or eval_now or save_now:
                # reading the losses waits for the device: only here, and always before anything is saved
                bad = window.sync()
                if bad:
                    ckpts = list_checkpoints(training.output_dir)
                    raise SystemExit(f"error: non-finite loss at step {bad[0]} (epoch {bad[1]}); stopping. "
                                     f"Last good checkpoint: {ckpts[-1] if ckpts else 'none'}")
            if log_now:
                losses, samples_per_second = window.flush()
                record = {"step": step, "epoch": round(epoch + batches_done / batches_per_epoch, 4), "lr": lr,
                          "loss": sum(losses.values()), **({} if list(losses) == ["loss"] else losses),
                          "samples_per_second": round(samples_per_second, 2)}
                _log_metrics(metrics_path, writer, record)
                progress.show(step, _progress_fields(record, losses))

            # the checkpoint is written before evaluating: a failed evaluation never costs the step's
            # checkpoint; the best score it finds is then added to that checkpoint's state
            state = {"step": step, "epoch": epoch + epoch_done, "batches_done": 0 if epoch_done else batches_done,
                     "best": best}
            saved = None
            if save_now:
                rng_states = gather_rng_states(dropout_seed)
                if is_main():
                    saved = save_checkpoint(training.output_dir, step, model, optimizer, scaler, state,
                                            training.save_total_limit, rng_states)
            if eval_now:
                with autocast(training):  # the precision training runs in
                    last_eval, new_best = _score_and_keep_best(training, model, scorer, best_metric, best, step, epoch,
                                                    metrics_path, writer, progress)
                if saved and new_best != best:
                    update_trainer_state(saved, best=new_best)
                best = new_best
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
        save_model(model, os.path.join(training.output_dir, "model"))
        log0(f"done: {step} steps; model saved to {os.path.join(training.output_dir, 'model')}")
    if writer:
        writer.close()
    if world > 1:
        dist.barrier()
    return last_eval


def _step_totals(local, world):
    """Each loss term's units in the optimizer step over all ranks: host numbers with one process;
    with several, a device tensor per term, summed without reading it back (no wait for the device).
    In float32, n / total rounds exactly as the host's float64 quotient does once cast to float32."""
    if world == 1:
        return local.tolist()
    totals = paddle.to_tensor(np.asarray(local, dtype="float32"))
    dist.all_reduce(totals)
    return [totals[i] for i in range(len(local))]


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


def _score_and_keep_best(training, model, scorer, best_metric, best, step, epoch, metrics_path, writer, progress):
    model.eval()
    with paddle.no_grad():
        result = scorer(model)
    model.train()
    record = {"step": step, "epoch": epoch, **{f"eval_{k}": v for k, v in result.items()}}
    _log_metrics(metrics_path, writer, record)
    progress.write(f"eval at step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in result.items()))
    if best_metric is not None and (best is None or result[best_metric] > best):
        best = result[best_metric]
        if is_main():
            save_model(model, os.path.join(training.output_dir, "best"))
            with open(os.path.join(training.output_dir, "best", "eval_results.json"), "w") as f:
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
