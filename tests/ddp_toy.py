"""The toy training run of test_engine.py under ``paddle.distributed.launch`` (gloo on CPU), for
tests of what only several ranks do. Not collected by pytest (no test_ prefix); run by test_ddp.py.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/ddp_toy.py RESULT_DIR [flags]

Each rank writes RESULT_DIR/params_rank<r>.npz (its final parameters). ``--node_dirs`` runs rank r
in RESULT_DIR/node<r> with a relative --output_dir, as nodes without a shared filesystem would.
"""
import argparse
import os
import pathlib
import sys

import numpy as np
import paddle
import paddle.distributed as dist

from conftest import LOSS_TERMS, ToyDataset, ToyModel, collate, make_args  # noqa: E402  (tests/ is sys.path[0])

from visualbert import engine, environment


class StopAfterSave(BaseException):
    pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("result_dir")
    parser.add_argument("--node_dirs", action="store_true")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--save_steps", type=int, default=4)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--stop_after_save", type=int, default=0, help="end every rank after the n-th save")
    parser.add_argument("--no_targets_on_rank", type=int, default=-1, help="this rank's batches have no loss units")
    parser.add_argument("--batch_size", type=int, default=8)
    flags = parser.parse_args()

    paddle.set_device("cpu")
    dist.init_parallel_env()
    rank = dist.get_rank()
    result_dir = os.path.abspath(flags.result_dir)
    out = os.path.join(result_dir, "run")
    if flags.node_dirs:
        node = os.path.join(result_dir, f"node{rank}")
        os.makedirs(node, exist_ok=True)
        os.chdir(node)
        out = "run"
    args = make_args(pathlib.Path(out), "", output_dir=out, train_batch_size=flags.batch_size, save_steps=flags.save_steps,
                     resume=flags.resume)
    terms = LOSS_TERMS
    if flags.no_targets_on_rank == rank:  # e.g. a rank whose batch holds no masked token
        terms = {"loss": lambda b: 0.0}
    elif flags.no_targets_on_rank >= 0:
        terms = {"loss": LOSS_TERMS["loss"]}
    if flags.stop_after_save:
        saves, real_gather, real_take = [], engine.gather_rng_states, engine._take

        def gather(*a, **kw):
            saves.append(1)
            return real_gather(*a, **kw)

        def take(*a, **kw):  # the step after that save begins: every rank stops here, none mid-collective
            if len(saves) >= flags.stop_after_save:
                raise StopAfterSave
            return real_take(*a, **kw)

        engine.gather_rng_states, engine._take = gather, take
    environment.set_seed(args.seed)
    model = ToyModel(dropout=flags.dropout)
    try:
        engine.train(args, model, ToyDataset(), collate, terms)
    except StopAfterSave:
        # ranks leave together, as train() ends with a barrier: a rank exiting while the other still
        # talks to the store rank 0 hosts can abort the process at teardown (exit -6)
        dist.barrier()
    np.savez(os.path.join(result_dir, f"params_rank{rank}.npz"), **{k: v.numpy() for k, v in model.state_dict().items()})


if __name__ == "__main__":
    sys.exit(main())
