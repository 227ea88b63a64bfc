"""The benchmarks: throughput end to end (tiny settings), the slow-class flag, bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.throughput import main

REPO = Path(__file__).resolve().parents[1]


def test_throughput_benchmark_reports_all_pipelines(capsys) -> None:
    assert main(["--steps", "2", "--warmup", "1", "--images", "512", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for pipeline in ("ours", "bare PyTorch loop", "peer", "data pipeline alone", "tight"):
        assert pipeline in out
    assert "met?" in out and "G multiply-adds/s = " in out


def test_slow_class_flag_limits_to_avx2_and_fp32(capfd, monkeypatch) -> None:
    from benchmarks import budget
    from common.training import resolve_precision

    probe = (
        "import os, sys; from common.training import resolve_precision; "
        "print([os.environ.get(k) for k in sys.argv[1:]], resolve_precision('auto', 'cpu'))"
    )
    keys = ["ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"]
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    assert budget.main(["--slow-class", "--", sys.executable, "-c", probe, *keys]) == 0
    out = capfd.readouterr().out
    assert "['avx2', 'AVX2', 'AVX2'] 32-true" in out
    assert "CPU class avx2 (forced" in out
    assert budget.main(["--", sys.executable, "-c", probe, *keys]) == 0
    assert "[None, None, None]" in capfd.readouterr().out
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert resolve_precision("auto", "cpu") == "32-true"


@pytest.mark.parametrize("script", ["suite_cost.sh", "smoke_times.sh"])
def test_paper_benchmarks_reject_an_unknown_paper_in_one_line(script: str) -> None:
    result = subprocess.run(
        [REPO / "benchmarks" / script, "no_such_paper"], capture_output=True, text=True
    )
    assert result.returncode != 0 and "papers/no_such_paper" in result.stderr
