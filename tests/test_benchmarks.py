"""The throughput benchmark runs end to end (tiny settings) and reports every pipeline."""

from benchmarks.throughput import main


def test_throughput_benchmark_reports_all_pipelines(capsys) -> None:
    assert main(["--steps", "2", "--warmup", "1", "--images", "512", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for pipeline in ("ours", "bare PyTorch loop", "peer", "data pipeline alone"):
        assert pipeline in out
    assert "met?" in out
