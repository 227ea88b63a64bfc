"""`python -m common.train`: one run (arm × dataset × seed) of a paper's pipeline, a DVC stage."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import sys
import threading
from pathlib import Path

from common.config import ConfigError, RunConfig, check_machine, load_params, resolve
from common.datasets import DataError
from common.io import BusyError, exclusive, remove_leftovers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="paper params")
    parser.add_argument("--shared", type=Path, help="repo-wide params (trainer, wandb defaults)")
    parser.add_argument("--arm", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument(
        "--data", type=Path, help="prepared data set (.pt); none for ImageNet (data.root)"
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    return parser.parse_args(argv)


def banner(params: dict, config: RunConfig) -> str:
    """`paper: arm on dataset, seed s (..., one of N runs)`: which run of the pipeline's matrix
    (arms × datasets × seeds) this is. No position `[k/N]`: DVC runs the matrix in an order of its
    own, not the params' order. No count for a run outside the matrix."""
    runs = list(itertools.product(*(params.get(k, []) for k in ("arms", "datasets", "seeds"))))
    one_of = (
        f", one of {len(runs)} runs" if (config.arm, config.dataset, config.seed) in runs else ""
    )
    s = config.schedule
    length = f"{s.max_steps} iterations" if s.max_steps >= 0 else f"{s.epochs} epoch(s)"
    return (
        f"{config.paper}: {config.arm} on {config.dataset}, seed {config.seed} "
        f"({config.profile} profile, {length}{one_of}) -> {config.name}"
    )


def first_process() -> bool:
    """This process is the run's first (global rank 0): not a DDP rank Lightning or a launcher
    (torchrun, SLURM) started beside it, which writes none of the run's files itself."""
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return all(os.environ.get(k, "0") == "0" for k in ranks)


def writer_lock(out: Path) -> Path:
    """The run's lock, beside its folder (`runs/.<run>.lock`), not in it: the table stage hashes
    the run folders (.dvcignore makes DVC skip a lock file that a killed run left)."""
    return out.parent / f".{out.name}.lock"


def stop_with_parent(poll_s: float = 0.5) -> threading.Event:
    """Stop this run when the process that started it dies (set the returned event to stop
    watching). Killing `dvc repro` leaves its stage's command running on its own, unseen, beside
    the next `dvc repro`; SIGINT is a Ctrl-C: Lightning shuts down, the last checkpoint stays."""
    done, parent = threading.Event(), os.getppid()
    if parent == 1:  # started by init (a container's entry point): no parent to outlive
        return done

    def watch() -> None:
        while not done.wait(poll_s):
            if os.getppid() != parent:
                with contextlib.suppress(OSError):  # the terminal may be gone with the parent
                    print(f"\nstopping: parent process {parent} ended", file=sys.stderr)
                # A SIGINT that Python ignores (inherited SIG_IGN, as by `cmd &` in a script)
                # would not stop it: then SIGTERM, which ends it at once.
                handled = signal.getsignal(signal.SIGINT) is signal.default_int_handler
                os.kill(os.getpid(), signal.SIGINT if handled else signal.SIGTERM)
                return

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
    return done


def _train(config: RunConfig, data: Path | None, out: Path) -> None:
    watching = stop_with_parent()
    try:
        from common.training import fit  # after validation: importing Lightning takes seconds

        fit(config, data, out)
    finally:
        watching.set()


def _shared(shared: dict, paper_dir: Path) -> dict:
    """The repo-wide sections under a paper's params; W&B writes beside the paper's runs
    (`papers/<paper>/wandb/`, where the README's `wandb sync` looks) unless `wandb.dir` says."""
    sections = {k: shared[k] for k in ("trainer", "wandb") if k in shared}
    sections["wandb"] = {"dir": str(paper_dir), **sections.get("wandb", {})}
    return sections


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        shared = load_params(args.shared) if args.shared else {}
        config = resolve(
            params, paper=args.params.resolve().parent.name, arm=args.arm,
            dataset=args.dataset, seed=args.seed,
            shared=_shared(shared, args.params.parent),
        )  # fmt: skip
        check_machine(config.trainer)
        first = first_process()
        lock = exclusive(writer_lock(args.out), f"run: {args.out}")
        with lock if first else contextlib.nullcontext():
            if args.data is not None and first:  # a `data` stage killed mid-write left them,
                remove_leftovers(args.data)  # and DVC may restore its file without running it
            print(f"\n{banner(params, config)}", flush=True)
            _train(config, args.data, args.out)
    except (ConfigError, DataError, BusyError) as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:  # outside Lightning's own handling (which exits with status 1)
        sys.exit(f"interrupted: {args.out} resumes from its last checkpoint on the next run")


if __name__ == "__main__":
    main()
