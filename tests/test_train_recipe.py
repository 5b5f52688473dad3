"""scripts/train_recipe.py: the stages chain into each other, finished stages are skipped, and every
option a stage passes exists in its training script (the scripts need torch, so they are read, not run)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import train_recipe as tr  # noqa: E402


@pytest.mark.parametrize("name", sorted(tr.RECIPES))
def test_each_stage_starts_from_the_previous_stage_output(tmp_path, name):
    recipe = tr.RECIPES[name]
    for i, stage in enumerate(recipe.stages):
        cmd = tr.command(recipe, tmp_path, i, python="py")
        folder = cmd[cmd.index(recipe.folder_option) + 1]
        assert folder == str(tmp_path / stage.name)
        if i == 0:
            assert "--init" not in cmd
        else:
            prev = recipe.stages[i - 1]
            assert cmd[cmd.index("--init") + 1] == str(tmp_path / prev.name / recipe.output)
        if recipe.export_option:
            assert cmd[cmd.index(recipe.export_option) + 1] == str(tmp_path / stage.name / recipe.output)


@pytest.mark.parametrize("name", sorted(tr.RECIPES))
def test_every_option_of_a_stage_is_one_the_training_script_takes(name):
    recipe = tr.RECIPES[name]
    source = (ROOT / "scripts" / recipe.script).read_text()
    known = set(re.findall(r'add_argument\(\s*"(--[a-z-]+)"', source))
    used = {a for s in recipe.stages for a in s.args if a.startswith("--")}
    used |= {recipe.folder_option} | ({recipe.export_option} if recipe.export_option else set())
    used |= {"--init"} if any(s.init_from_prev for s in recipe.stages) else set()
    assert used <= known, f"{recipe.script} lacks {sorted(used - known)}"


def test_the_last_stage_matches_the_shipped_model_version():
    # the model cards name the shipped versions; the recipe's last stage must be the one that made them
    rec = tr.RECIPES["recognizer"].stages[-1].args
    det = tr.RECIPES["detector"].stages[-1].args
    assert rec[rec.index("--tag") + 1] == "v1s5" and rec[rec.index("--steps") + 1] == "7000"
    assert "crnn-ctc-v1s5-s7000" in (ROOT / "models" / "recognizer.md").read_text()
    assert f"({det[det.index('--version') + 1]})" in (ROOT / "models" / "detector.md").read_text()
    ver = tr.RECIPES["verifier"].stages[-1].args
    assert f"version {ver[ver.index('--version') + 1]}" in (ROOT / "models" / "plate_verifier.md").read_text()
    cor = tr.RECIPES["corners"].stages[-1].args
    assert f"version {cor[cor.index('--version') + 1]}" in (ROOT / "models" / "corner_refiner.md").read_text()


def test_finished_stages_are_skipped_and_a_run_resumes_at_the_first_unfinished(tmp_path):
    recipe = tr.RECIPES["detector"]
    n = len(recipe.stages)
    assert n >= 3
    assert tr.pending(recipe, tmp_path) == list(range(n))
    names = [s.name for s in recipe.stages]
    (tmp_path / names[0]).mkdir()
    (tmp_path / names[0] / "done").write_text("finished\n")
    assert tr.pending(recipe, tmp_path) == list(range(1, n))
    (tmp_path / names[2]).mkdir()
    (tmp_path / names[2] / "done").write_text("finished\n")  # a later marker does not skip an unfinished stage
    assert tr.pending(recipe, tmp_path) == list(range(1, n))
    for s in names[1:]:
        (tmp_path / s).mkdir(exist_ok=True)
        (tmp_path / s / "done").write_text("finished\n")
    assert tr.pending(recipe, tmp_path) == []


def test_dry_run_prints_every_stage_and_runs_nothing(tmp_path, capsys):
    assert tr.main(["recognizer", "--runs", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("to run: ") == len(tr.RECIPES["recognizer"].stages)
    assert "train_recognizer.py" in out and "--stop-at 3343" in out
    assert list(tmp_path.iterdir()) == []  # no stage folder was made


def test_a_failing_stage_stops_the_recipe_without_marking_it_done(tmp_path, capsys):
    # a real run of the training script with an option it refuses: exit status 2 from argparse
    recipe = tr.Recipe(script="train_recipe.py", output="out.onnx", install_as="unused.onnx",
                       folder_option="--runs", export_option=None,
                       stages=(tr.Stage("s1", ("--no-such-option",), init_from_prev=False),))
    assert tr.run(recipe, tmp_path, install=False, dry_run=False) == 2
    assert not (tmp_path / "s1" / "done").exists()
    assert "failed with exit status 2" in capsys.readouterr().err
