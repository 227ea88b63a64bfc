"""Faults: what a run resumes from, corrupt files, leftovers of interrupted writes (issue 6), one
writer per run (issue 18).

Each test is one defect: it failed before the fix. The finished 2-epoch run of `finished` is
copied into each test's folder, so only the tests that must train afresh train.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from common import train, training
from common.data import load_prepared, save_prepared
from common.datasets import DataError, read_split
from common.io import atomic_torch_save, atomic_write_json, exclusive
from common.training import fit, run_digest
from tests.conftest import REPO, child_env


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


def test_run_digest_covers_code_data_config_precision_and_threads(
    tmp_path, monkeypatch, make_config
):
    source = tmp_path / "model.py"
    source.write_text("X = 1\n")
    module = types.ModuleType("changed_model")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, "changed_model", module)
    monkeypatch.setattr(training, "REPO", tmp_path)
    config = make_config()
    before = run_digest(config, "data", "32-true")
    assert run_digest(config, "data", "32-true") == before
    source.write_text("X = 1  # a comment\n")
    assert run_digest(config, "data", "32-true") != before
    after = run_digest(config, "data", "32-true")
    assert run_digest(config, "other data", "32-true") != after
    assert run_digest(make_config(seed=1), "data", "32-true") != after
    # Issue 18: what `auto` resolves to and the thread count change the numbers.
    assert run_digest(config, "data", "bf16-mixed") != after
    assert run_digest(make_config(trainer={"threads": 2}), "data", "32-true") != after


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


# ---- issue 18: one writer per run ----


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.1)


def _running(pid: int, out: Path) -> bool:
    """Process `pid` is still the trainer of `out` (not exited, a zombie or a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()  # empty for a zombie
    except FileNotFoundError:
        return False
    return str(out).encode() in cmdline


def _train_argv(params_file: Path, data: Path, out: Path) -> list[str]:
    argv = ["--params", params_file, "--arm", "tiny", "--dataset", "fashion_mnist", "--seed", 0]
    return [str(a) for a in [*argv, "--data", data, "--out", out]]


# Starts `argv` with its output in the log file, prints its pid and waits, as DVC does.
PARENT = """import subprocess, sys, time
with open(sys.argv[1], "w") as log:
    child = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def writer(tmp_path_factory, new_params, prepared_file):
    """`python -m common.train` (a tiny run of 500 epochs) under a parent process, as `dvc repro`
    starts it, after its first epoch: its parent, pid, params_file, out (run folder) and log."""
    root = tmp_path_factory.mktemp("writer")
    params = new_params()
    params["profiles"]["default"]["schedule"]["epochs"] = 500
    params_file = root / "tiny_paper" / "params.yaml"
    params_file.parent.mkdir()
    params_file.write_text(yaml.safe_dump(params))
    out, log = root / "runs" / "tiny-fashion_mnist-s0", root / "train.log"
    argv = [sys.executable, "-m", "common.train", *_train_argv(params_file, prepared_file, out)]
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, log, *argv], cwd=REPO, env=child_env(),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    pid = int(parent.stdout.readline())
    try:
        # The epoch's line is printed before its checkpoint is saved (Lightning runs checkpoint
        # callbacks last): wait for both, or a kill could land before any checkpoint exists.
        _wait_for(lambda: "epoch 1/500" in log.read_text(), 90)
        _wait_for(lambda: (out / "ckpt" / "last.ckpt").is_file(), 30)
        yield types.SimpleNamespace(
            parent=parent, pid=pid, params_file=params_file, out=out, log=log
        )
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        if _running(pid, out):
            os.kill(pid, signal.SIGKILL)


def test_second_writer_of_a_run_is_refused_at_once(writer, monkeypatch):
    out = writer.out
    config = (out / "config.json").stat()
    monkeypatch.setattr(training, "fit", lambda *args: pytest.fail("a second writer trained"))
    with pytest.raises(SystemExit) as info:
        train.main(_train_argv(writer.params_file, Path("unused.pt"), out))
    message = info.value.code
    start = f"error: run: {out} is being written by another process (pid {writer.pid}); "
    assert isinstance(message, str) and "\n" not in message and message.startswith(start)
    assert (out / "config.json").stat().st_mtime_ns == config.st_mtime_ns  # not written again


def test_run_stops_with_the_process_that_started_it(writer):
    out = writer.out
    writer.parent.kill()  # as `kill -9` of `dvc repro`: the trainer would go on alone (ppid 1)
    writer.parent.wait()
    _wait_for(lambda: not _running(writer.pid, out), 10)
    assert "stopping: parent process" in writer.log.read_text()
    checkpoint = torch.load(out / "ckpt" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] >= 5 and checkpoint["run_digest"]
    assert [p.name for p in (out / "ckpt").iterdir()] == ["last.ckpt"]  # no temporary file
    with exclusive(train.writer_lock(out), "run"):  # released
        pass


def test_leftover_of_a_killed_data_stage_is_removed_by_the_next_run(
    tmp_path, monkeypatch, params, prepared_file
):
    # DVC restores a data file from its run cache without running the stage that left it.
    data = tmp_path / "data" / "fashion_mnist.pt"
    data.parent.mkdir()
    shutil.copy(prepared_file, data)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    left = data.with_name(f".{data.name}.tmp{dead}.abc123")
    left.write_bytes(b"partial")
    params_file = tmp_path / "tiny_paper" / "params.yaml"
    params_file.parent.mkdir()
    params_file.write_text(yaml.safe_dump(params))
    trained = []
    monkeypatch.setattr(training, "fit", lambda *args: trained.append(args))
    train.main(_train_argv(params_file, data, tmp_path / "runs" / "run"))
    assert trained and not left.exists()


def test_same_object_saves_to_identical_bytes(tmp_path, monkeypatch):
    obj = {"weights": torch.arange(10.0), "name": "x"}
    a, b = (tmp_path / name / "last.ckpt" for name in "ab")
    atomic_torch_save(obj, a)
    monkeypatch.setattr(os, "getpid", lambda: 4194305)  # another process: another temporary name
    atomic_torch_save(obj, b)
    assert a.read_bytes() == b.read_bytes()


def test_checkpoints_are_written_in_their_own_folder(
    tmp_path, monkeypatch, prepared_file, make_config
):
    # Lightning's writer goes through the system temp dir, which is on another filesystem here.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no such dir"))
    fit(make_config(), prepared_file, tmp_path / "run")
    ckpt = tmp_path / "run" / "ckpt"
    assert [p.name for p in ckpt.iterdir()] == ["last.ckpt"]
    saved = (ckpt / "last.ckpt").read_bytes()

    def killed(*args):
        raise KeyboardInterrupt  # a kill while the checkpoint is moved in place

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        training.AtomicCheckpointIO().save_checkpoint({"epoch": 3}, ckpt / "last.ckpt")
    assert [p.name for p in ckpt.iterdir()] == ["last.ckpt"]
    assert (ckpt / "last.ckpt").read_bytes() == saved


def _interrupted_fit(config, data: Path, out: Path, monkeypatch) -> None:
    """`fit` killed after training, before the run finishes (its metrics.json)."""
    write = training.atomic_write_json

    def interrupted(path: Path, obj: dict) -> None:
        if path.name == "metrics.json":
            raise KeyboardInterrupt
        write(path, obj)

    with monkeypatch.context() as patch:
        patch.setattr(training, "atomic_write_json", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fit(config, data, out)


def _notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]


def test_other_configurations_checkpoint_is_kept_until_this_run_finishes(
    finished, tmp_path, capsys, monkeypatch, prepared_file, make_config
):
    out = _copy(finished, tmp_path)
    last, previous = out / "ckpt" / "last.ckpt", out / "ckpt" / "last.ckpt.previous"
    saved = last.read_bytes()
    other = make_config(optim={"lr": 0.02})
    _interrupted_fit(other, prepared_file, out, monkeypatch)
    digest = torch.load(last, weights_only=True)["run_digest"]
    assert _notes(capsys) == [
        f"note: {last} belongs to another configuration (run digest "
        f"{finished[1]['run_digest']}, this run {digest}); kept as last.ckpt.previous until this "
        "run finishes; training afresh"
    ]
    assert previous.read_bytes() == saved
    assert fit(other, prepared_file, out)["run_digest"] == digest  # resumed, finished
    assert not previous.exists()


def test_switching_a_setting_and_back_resumes_the_set_aside_checkpoint(
    finished, tmp_path, capsys, monkeypatch, prepared_file, make_config
):
    out = _copy(finished, tmp_path)
    _interrupted_fit(make_config(optim={"lr": 0.02}), prepared_file, out, monkeypatch)
    capsys.readouterr()
    metrics = fit(make_config(), prepared_file, out)  # back: finished, so nothing to train
    assert metrics == finished[1]  # training time included: restored, not trained again
    assert len(_notes(capsys)) == 1
    assert [p.name for p in (out / "ckpt").iterdir()] == ["last.ckpt"]
