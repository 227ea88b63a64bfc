"""Faults: what a run resumes from, corrupt files, leftovers of interrupted writes (issue 6).

Each test is one defect: it failed before the fix. The finished 2-epoch run of `finished` is
copied into each test's folder, so only the tests that must train afresh train.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from common import train, training
from common.data import load_prepared, save_prepared
from common.datasets import DataError, read_split
from common.io import atomic_write_json
from common.training import fit, run_digest
from tests.conftest import REPO


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, prepared_file, make_config):
    """A finished 2-epoch run: its folder and metrics."""
    out = tmp_path_factory.mktemp("finished") / "run"
    return out, fit(make_config(), prepared_file, out)


def _copy(finished, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out


def _no_timings(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("train_time_s", "time_per_epoch_s")}


# ---- 1: a changed dependency after a finished run ----


def test_finished_run_whose_outputs_dvc_removed_emits_them_again(
    finished, tmp_path, prepared_file, make_config
):
    out = _copy(finished, tmp_path)
    history = (out / "history.csv").read_text()
    (out / "history.csv").unlink()  # what `dvc repro` does before re-running the stage
    (out / "metrics.json").unlink()
    metrics = fit(make_config(), prepared_file, out)
    assert (out / "history.csv").read_text() == history  # rows from the finished checkpoint
    assert metrics == finished[1]
    assert (out / "metrics.json").is_file()


def test_run_digest_covers_code_data_and_config(tmp_path, monkeypatch, make_config):
    source = tmp_path / "model.py"
    source.write_text("X = 1\n")
    module = types.ModuleType("changed_model")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, "changed_model", module)
    monkeypatch.setattr(training, "REPO", tmp_path)
    config = make_config()
    before = run_digest(config, "data")
    assert run_digest(config, "data") == before
    source.write_text("X = 1  # a comment\n")
    assert run_digest(config, "data") != before
    after = run_digest(config, "data")
    assert run_digest(config, "other data") != after
    assert run_digest(make_config(seed=1), "data") != after


def test_changed_code_trains_afresh_instead_of_resuming(
    finished, tmp_path, monkeypatch, prepared_file, make_config
):
    out = _copy(finished, tmp_path)
    # One more repo module loaded: the code the run depends on is not what trained the checkpoint.
    loaded = set(training._repo_sources())
    unloaded = next(p for p in sorted(REPO.glob("[!.]*/**/*.py")) if p not in loaded)
    extra = types.ModuleType("extra")
    extra.__file__ = str(unloaded)
    monkeypatch.setitem(sys.modules, "extra", extra)
    metrics = fit(make_config(), prepared_file, out)
    assert metrics["run_digest"] != finished[1]["run_digest"]
    assert _no_timings(metrics) == {**_no_timings(finished[1]), "run_digest": metrics["run_digest"]}
    ckpt = torch.load(out / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["run_digest"] == metrics["run_digest"]
    assert metrics["train_time_s"] != finished[1]["train_time_s"]  # trained, not restored


# ---- 2: a typo must not cost the checkpoint ----


def test_typo_keeps_the_checkpoint(finished, tmp_path, params, prepared_file):
    out = _copy(finished, tmp_path)
    saved = (out / "ckpt" / "last.ckpt").read_bytes()
    params["profiles"]["default"]["trainer"]["precision"] = "bogus"
    params_file = tmp_path / "tiny_paper" / "params.yaml"
    params_file.parent.mkdir()
    params_file.write_text(yaml.safe_dump(params))
    argv = ["--params", params_file, "--arm", "tiny", "--dataset", "fashion_mnist", "--seed", "0"]
    with pytest.raises(SystemExit, match=r"^error: trainer\.precision: 'bogus'"):
        train.main([*map(str, argv), "--data", str(prepared_file), "--out", str(out)])
    assert (out / "ckpt" / "last.ckpt").read_bytes() == saved


# ---- 4: corrupt files ----


def test_truncated_checkpoint_is_set_aside_and_the_run_starts_afresh(
    finished, tmp_path, capsys, prepared_file, make_config
):
    out = _copy(finished, tmp_path)
    last = out / "ckpt" / "last.ckpt"
    truncated = last.read_bytes()[:1000]
    last.write_bytes(truncated)
    metrics = fit(make_config(), prepared_file, out)
    warning = [line for line in capsys.readouterr().out.splitlines() if "cannot be loaded" in line]
    assert len(warning) == 1 and warning[0].startswith(f"warning: {last} cannot be loaded (")
    assert (out / "ckpt" / "last.ckpt.unreadable").read_bytes() == truncated  # renamed, kept
    assert _no_timings(metrics) == _no_timings(finished[1])
    assert torch.load(last, weights_only=True)["global_step"] == 10


def _prepared_copy(prepared_file: Path, tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "data.pt"
    shutil.copy(prepared_file, path)
    return path, path.read_bytes()


def test_truncated_prepared_file_is_one_line(prepared_file, tmp_path):
    path, blob = _prepared_copy(prepared_file, tmp_path)
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"^data: .*data\.pt cannot be loaded \(") as info:
        load_prepared(path)
    assert "\n" not in str(info.value)


def test_flipped_byte_in_prepared_file_is_detected(prepared_file, tmp_path):
    path, blob = _prepared_copy(prepared_file, tmp_path)
    images = load_prepared(prepared_file)["train_images"].numpy().tobytes()
    at = blob.find(images[:256]) + 100
    path.write_bytes(blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :])
    with pytest.raises(DataError, match=r"^data: .*data\.pt does not match its content hash"):
        load_prepared(path)


def test_prepared_file_without_content_hash_is_refused(prepared_file, tmp_path):
    data = load_prepared(prepared_file)
    del data["sha256"]
    torch.save(data, tmp_path / "old.pt")
    with pytest.raises(DataError, match=r"lacks sha256; re-run its `data` stage"):
        load_prepared(tmp_path / "old.pt")
    save_prepared(data, tmp_path / "new.pt")
    assert load_prepared(tmp_path / "new.pt")["sha256"] == load_prepared(prepared_file)["sha256"]


# ---- 5: leftovers ----


def test_leftover_temp_files_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    left = tmp_path / f".metrics.json.tmp{dead}.abc123"
    live = tmp_path / f".metrics.json.tmp{os.getpid()}.def456"  # a writer still at it
    other = tmp_path / f".history.csv.tmp{dead}.abc123"  # another file's: left to its next write
    for path in (left, live, other):
        path.write_text("partial")
    atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["metrics.json", live.name, other.name]
    )


def test_every_paper_stage_prints_its_table_on_every_repro():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    papers = {name: stage for name, stage in stages.items() if name.startswith("papers/")}
    assert papers and all(stage.get("always_changed") for stage in papers.values())


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's Fashion-MNIST absent")
def test_flipped_byte_in_uncompressed_raw_idx_file_is_detected(tmp_path):
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        content = gzip.decompress((DEBIAN_FASHION_MNIST / f"{stem}.gz").read_bytes())
        (tmp_path / stem).write_bytes(content)
    assert read_split("fashion_mnist", tmp_path, train=False)[1].shape == (10000,)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    blob = labels.read_bytes()
    labels.write_bytes(blob[:100] + bytes([blob[100] ^ 0x01]) + blob[101:])  # still a valid label
    with pytest.raises(DataError, match=r"^fashion_mnist: .*t10k-labels-idx1-ubyte: md5 is "):
        read_split("fashion_mnist", tmp_path, train=False)
