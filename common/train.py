"""`python -m common.train`: one run (arm × dataset × seed) of a paper's pipeline, a DVC stage."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from common.config import ConfigError, RunConfig, load_params, resolve
from common.datasets import DataError


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
    """`[k/N] paper: arm on dataset, seed s (...)`: which of the N runs of the pipeline's matrix
    (arms × datasets × seeds, DVC's order) this is; no `[k/N]` for a run outside the matrix."""
    runs = list(itertools.product(*(params.get(k, []) for k in ("arms", "datasets", "seeds"))))
    key = (config.arm, config.dataset, config.seed)
    position = f"[{runs.index(key) + 1}/{len(runs)}] " if key in runs else ""
    s = config.schedule
    length = f"{s.max_steps} iterations" if s.max_steps >= 0 else f"{s.epochs} epoch(s)"
    return (
        f"{position}{config.paper}: {config.arm} on {config.dataset}, seed {config.seed} "
        f"({config.profile} profile, {length}) -> {config.name}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        params = load_params(args.params)
        shared = load_params(args.shared) if args.shared else {}
        config = resolve(
            params, paper=args.params.resolve().parent.name, arm=args.arm,
            dataset=args.dataset, seed=args.seed,
            shared={k: shared[k] for k in ("trainer", "wandb") if k in shared},
        )  # fmt: skip
        print(f"\n{banner(params, config)}", flush=True)
        from common.training import fit  # after validation: importing Lightning takes seconds

        fit(config, args.data, args.out)
    except (ConfigError, DataError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
