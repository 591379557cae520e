"""`hasten prune` / `hasten distill` end to end: the gate, the before/after table, clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hasten.cli import app
from hasten.core import HastenError

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
runner = CliRunner()
FAST = ["--batch-sizes", "64", "--time-budget-s", "0.3", "--threads", "1"]


@pytest.mark.slow
def test_prune_channels_of_the_example_writes_a_gated_smaller_model(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    (tmp_path / "t").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    out = tmp_path / "pruned.onnx"
    result = runner.invoke(app, ["prune", "digits-cnn", "--method", "channel", "--amount", "0.5",
                                 "--finetune-steps", "150", "--budget", "2pt", "-o", str(out), "--keep-if-slower",
                                 "--json", str(tmp_path / "r.json"), *FAST])
    assert result.exit_code == 0, result.output
    assert "Channels per layer" in result.stdout and "32 → 16" in result.stdout and "speed-up b64" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["accepted"] and report["verdict"]["passed"]
    assert report["quality"]["metric"] == "accuracy" and report["split"]["evaluation"] == 360  # the held-out test split
    manifest = json.loads(out.with_suffix(".manifest.json").read_text())
    assert manifest["parameters"]["after"]["total"] < manifest["parameters"]["before"]["total"] / 3
    assert manifest["finetune"]["data"]["name"] == "digits-train"
    assert not list((tmp_path / "t").glob("hasten-derive-*"))  # written to -o: the working copy is gone


@pytest.mark.slow
def test_unstructured_pruning_says_plainly_that_it_is_not_faster(tmp_path: Path) -> None:
    out = tmp_path / "sparse.onnx"
    result = runner.invoke(app, ["prune", "digits-cnn", "--method", "unstructured", "--amount", "0.8",
                                 "-o", str(out), "--budget", "50pt", *FAST])
    assert "dense kernels" in result.stdout
    assert "overall sparsity of the pruned layers: 80.0% zeros" in result.stdout
    if result.exit_code == 3:  # the usual case: refused by the speed guard, nothing written
        assert "not faster" in result.output and not out.exists()
    else:  # noise may call a same-speed model faster; then it was written
        assert result.exit_code == 0 and out.exists()


def test_a_refused_student_leaves_no_working_copy_behind(tmp_path: Path, monkeypatch) -> None:
    """'nothing was written' holds for the temporary folder too (a minilm student is ~70 MB)."""
    import tempfile

    (tmp_path / "t").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    out = tmp_path / "student.onnx"
    result = runner.invoke(app, ["distill", "digits-cnn", "--student", "width=0.5", "--steps", "1", "--budget", "0.1pt",
                                 "-o", str(out), *FAST])
    assert result.exit_code == 3 and "refused: quality" in result.output and "nothing was written" in result.output
    assert not out.exists() and not list((tmp_path / "t").glob("hasten-derive-*"))


def _refused(args: list[str], *messages: str) -> None:
    """The CLI raises a HastenError (main() prints it and exits 2) naming the problem."""
    result = runner.invoke(app, args)
    assert isinstance(result.exception, HastenError), result.output
    for message in messages:
        assert message in str(result.exception)


def test_prune_and_distill_refuse_what_they_cannot_do(tmp_path: Path, linear_onnx) -> None:
    x = str(tmp_path / "x.onnx")
    _refused(["prune", str(linear_onnx[0]), "-o", x], "needs the PyTorch module", "hasten quantize")
    _refused(["prune", "digits-cnn", "--method", "2:4", "--amount", "0.3", "-o", x], "exactly half")
    _refused(["distill", "digits-cnn", "--student", "layers=2", "-o", x, "--steps", "1", *FAST],
             "needs a transformer", "width=0.5")
    _refused(["distill", "digits-cnn", "--student", "half", "-o", x], "cannot read --student")
    _refused(["distill", "digits-cnn", "--data", str(tmp_path / "missing.npz"), "-o", x], "not found")
    done = subprocess.run([sys.executable, "-m", "hasten.cli", "prune", str(linear_onnx[0]), "-o", x],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "needs the PyTorch module" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_distill_a_narrower_student_from_the_example(tmp_path: Path) -> None:
    out = tmp_path / "student.onnx"
    result = runner.invoke(app, ["distill", "digits-cnn", "--student", "width=0.5", "--steps", "200", "--lr", "2e-3",
                                 "--budget", "3pt", "-o", str(out), "--keep-if-slower", "--checkpoint",
                                 str(tmp_path / "ck"), *FAST])
    assert result.exit_code == 0, result.output
    assert "distillation: 200 steps on digits-train" in result.stdout
    manifest = json.loads(out.with_suffix(".manifest.json").read_text())
    assert manifest["loss"] == "kl" and manifest["student"]["kind"] == "width"
    # the same command again resumes at the end: no training, the same student
    again = runner.invoke(app, ["distill", "digits-cnn", "--student", "width=0.5", "--steps", "200", "--lr", "2e-3",
                                "--budget", "3pt", "-o", str(tmp_path / "again.onnx"), "--keep-if-slower",
                                "--checkpoint", str(tmp_path / "ck"), *FAST])
    assert again.exit_code == 0, again.output
    assert "resumed from step 200" in again.stdout
