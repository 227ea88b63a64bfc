"""`python -m common.scaffold`: a new paper is one command, then its model. In a temporary copy of
the repo, the scaffolded paper with a 10-line model passes the paper checks and a smoke
`dvc repro`, touching no file beyond those the scaffold writes; bad input writes nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common import scaffold
from tests.test_notebooks import execute_notebook
from tests.test_pipelines import FASHION_MNIST, VENV, _assert_nothing_ran, clean_shell, dvc

REPO = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]

# The paper's model as an author writes it over the placeholder: built on the paper it extends.
MODEL = '''"""A dummy paper's network: ResNet's 3x3 conv, BN, ReLU, pooling, a classifier."""

from torch import Tensor, nn

from papers.resnet.model import conv3x3


class Dummy(nn.Module):
    def __init__(self, *, in_channels: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        body = [conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU()]
        head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
        self.net = nn.Sequential(*body, *head)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
'''


def _copy(root: Path) -> Path:
    """The working tree's files git would commit (no data, runs or results), committed in a new
    repository there, with this .venv."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        if not name.startswith("tests/") and (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("mode: offline ", "mode: disabled"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "copy"], cwd=root, check=True)
    (root / ".venv").symlink_to(VENV, target_is_directory=True)
    (root / ".git/info/exclude").write_text(".venv\n")  # a link: .gitignore's .venv/ misses it
    return root


def _run(root: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=root, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _changed(root: Path) -> set[str]:
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {line[3:] for line in status.splitlines()}


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_a_scaffolded_paper_with_its_model_passes_the_checks_and_a_smoke_repro(
    tmp_path: Path,
) -> None:
    root = _copy(tmp_path / "repo")
    made = _run(root, "common.scaffold", "dummy", "--extends", "resnet")
    assert made.returncode == 0, made.stderr
    folder = root / "papers" / "dummy"
    ruff = [str(VENV / "bin" / "ruff")]
    for command in ([*ruff, "check", str(folder)], [*ruff, "format", "--check", str(folder)]):
        assert subprocess.run(command, cwd=root, capture_output=True).returncode == 0, command

    # Until its regime is written, the default profile stops at the check stage, in one line.
    default = _run(root, "common.check", "papers/dummy")
    assert default.returncode == 1
    assert default.stderr.startswith("error: regime: ") and default.stderr.count("\n") == 1

    # The author's model replaces the placeholder (class renamed); the smoke profile, one seed.
    (folder / "model.py").write_text(MODEL)
    params = folder / "params.yaml"
    text = params.read_text().replace(".model.DummyNet}", ".model.Dummy}")
    text = text.replace("\nprofile: default ", "\nprofile: smoke   ")
    params.write_text(text.replace("\nseeds: [0, 1, 2] ", "\nseeds: [0]       "))

    deps = _run(root, "common.pipeline", "--check", ".", "papers/dummy")  # the rest: test_dvc_deps
    assert deps.returncode == 0, deps.stdout  # the model still imports the paper it extends
    assert "- papers/resnet/model.py\n" in (folder / "dvc.yaml").read_text()

    result = clean_shell(root, "source .venv/bin/activate && dvc repro papers/dummy")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Its check stage: `python -m common.check papers/dummy`, on the smoke profile.
    assert "papers/dummy: configuration checked (smoke profile, 2 runs" in result.stdout
    assert "| Test error, variant − baseline [fashion_mnist] |" in result.stdout
    # The other ways to name a paper's pipeline find it up to date (DVC's addressing).
    for args in (["repro", "-R", "papers/dummy"], ["repro", "papers/dummy/dvc.yaml"]):
        _assert_nothing_ran(dvc(root, *args), "dummy")
    outputs = execute_notebook(root / "notebooks/dummy.ipynb", folder, tmp_path / "out.ipynb")
    assert [o for o in outputs if "image/png" in o.get("data", {})]

    # Nothing touched but what the scaffold writes (and DVC's locks).
    written = {p.as_posix() for p in scaffold.plan(REPO, "dummy", "resnet")}
    assert _changed(root) == written | {"dvc.lock", "papers/dummy/dvc.lock"}


def _marks(root: Path) -> dict[str, float]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["High-way"], 2, "error: name: 'High-way' is not a lower-case Python identifier"),
        (["class"], 2, "error: name: 'class' is not a lower-case Python identifier"),
        (["resnet"], 1, "error: name: papers/resnet exists already"),
        (["highway", "--extends", "resnext9"], 2, "error: extends: 'resnext9' is not a paper"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], status: int, message: str,
) -> None:  # fmt: skip
    for name in ("README.md", "dvc.yaml", "notebooks/README.md", "papers/resnet/model.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    before = _marks(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        scaffold.main(args)
    assert exit_.value.code == status
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert _marks(tmp_path) == before


def test_the_placeholder_model_takes_the_data_sets_arguments() -> None:
    """The model the scaffold writes, without --extends, imports nothing of another paper."""
    text = scaffold.render("model.py.tmpl", **scaffold.template_values("plain", None))
    namespace: dict = {}
    exec(compile(text, "model.py", "exec"), namespace)
    net = namespace["PlainNet"](in_channels=3, num_classes=7)
    assert net(torch.zeros(2, 3, 12, 12)).shape == (2, 7)
    assert "import papers." not in text
