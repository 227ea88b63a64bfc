"""papers/dpn: this paper's own checks, run by its check stage (`python -m common.check
papers/dpn`) after common's: the metrics its top-k stage writes (papers/dpn/topk.py), which
published.yaml may cite."""

METRICS: tuple[str, ...] = ("top1_error", "top5_error", "topk_images")
