"""papers/lm_resnet: this paper's own checks, run by its check stage (`python -m common.check
papers/lm_resnet`) after common's.

A paper with analyses of its own lists here `METRICS` (the scalars they write, which
published.yaml may cite) and may add `check(params)`, raising common.config.ConfigError on a bad
analysis setting (papers/README.md). The scaffold's placeholder regime is refused by common's
check (common/regime.py `check_stated`) outside the smoke profile.
"""

METRICS: tuple[str, ...] = ()
