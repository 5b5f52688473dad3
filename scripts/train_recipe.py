#!/usr/bin/env python
"""Rebuild a shipped model with one command: every training stage in order, resumable.

    .venv/bin/python scripts/train_recipe.py recognizer            # runs/recipe/recognizer/...
    .venv/bin/python scripts/train_recipe.py detector --install    # ... and copy the result to models/
    .venv/bin/python scripts/train_recipe.py recognizer --dry-run  # print the stage commands only
    .venv/bin/python scripts/train_recipe.py verifier --install    # the detector's second look
    .venv/bin/python scripts/train_recipe.py corners --install     # the detector's corner refiner

The shipped models were made in stages (a from-scratch run, then fine-tuning runs with new data),
each started from the previous stage's exported ONNX file. This script holds those stages as data,
so the model card's recipe is one reproducible command instead of a sequence to copy by hand.
Every stage is seeded and resumes from its own checkpoint, so running the same command again after
an interruption (power cut, a shared CPU) continues where it stopped; a stage that finished leaves a
`done` marker and is skipped. Stages run at `nice 10` with one torch thread, as on a 2-core CPU.

The data generators (`scripts/platesynth`, `scripts/detector_train`) grew between the original
stages, so a rebuild trains every stage on today's generators: the result is the same recipe, not
a bit-identical copy of the shipped weights (the model cards say which figures each stage reached).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stage:
    name: str
    args: tuple[str, ...]  # the training script's options, "{prev}" = the previous stage's output
    init_from_prev: bool = True


@dataclass(frozen=True)
class Recipe:
    script: str  # under scripts/
    stages: tuple[Stage, ...]
    output: str  # the file a stage writes, relative to its folder
    install_as: str  # under models/
    folder_option: str  # the script's option naming a stage's checkpoint folder
    export_option: str | None  # the option naming the output file, if the script takes one


RECIPES: dict[str, Recipe] = {
    # models/recognizer.md, "Training": crnn-ctc-v1s5-s7000
    "recognizer": Recipe(
        script="train_recognizer.py", output="recognizer.onnx", install_as="recognizer.onnx",
        folder_option="--out", export_option="--export",
        stages=(
            Stage("s1", ("--steps", "6000", "--stop-at", "3343"), init_from_prev=False),
            Stage("s2", ("--steps", "2000", "--lr", "1e-3", "--seed", "1", "--emblem-p", "0.5", "--tag", "v1ft")),
            Stage("s3", ("--steps", "9000", "--lr", "1e-3", "--seed", "3", "--emblem-p", "0.5",
                         "--furniture-p", "0.7", "--tag", "v1s3", "--threads", "1", "--workers", "1")),
            Stage("s5", ("--steps", "7000", "--lr", "7e-4", "--seed", "5", "--emblem-p", "0.5",
                         "--furniture-p", "0.7", "--tag", "v1s5", "--threads", "1", "--workers", "1")),
        )),
    # models/detector.md, "Training": det-0.6
    "detector": Recipe(
        script="train_detector.py", output="last.onnx", install_as="detector.onnx",
        folder_option="--run", export_option=None,
        stages=(
            Stage("s1", ("--steps", "4000", "--lr", "2e-3", "--seed", "0", "--version", "det-0.1",
                         "--train-ignore", ""),
                  init_from_prev=False),
            Stage("s2", ("--steps", "3000", "--lr", "1e-3", "--seed", "5", "--version", "det-0.2",
                         "--train-ignore", "")),
            Stage("s3", ("--steps", "1500", "--lr", "5e-4", "--seed", "7", "--version", "det-0.3",
                         "--train-ignore", "")),
            Stage("s4", ("--steps", "2500", "--lr", "3e-4", "--seed", "8", "--version", "det-0.4",
                         "--train-ignore", "")),
            # det-0.5: the first stage with the don't-care regions (--train-ignore's default list)
            Stage("s5", ("--steps", "9000", "--lr", "1e-3", "--seed", "13", "--text-p", "0.35",
                         "--badge-p", "0.0", "--version", "det-0.5")),
            # det-0.6: det-0.5's hard frames (mined from the shipped det-0.5) drawn more often, and
            # each plate's regression weighing one in total
            Stage("s6", ("--steps", "5000", "--lr", "5e-4", "--seed", "15", "--text-p", "0.35",
                         "--badge-p", "0.0", "--hard-frames",
                         "scripts/detector_train/hard_frames_det-0.5.json", "--reg-per-plate",
                         "--version", "det-0.6")),
        )),
    # models/plate_verifier.md: pv-0.6, one stage; it mines its crops from the shipped
    # models/detector.onnx first (RUN/crops.npz), with one turned copy of each real train frame,
    # so rebuild it after the detector (two torch threads, as it was trained)
    "verifier": Recipe(
        script="train_verifier.py", output="plate_verifier.onnx", install_as="plate_verifier.onnx",
        folder_option="--run", export_option="--export",
        stages=(
            Stage("v1", ("--steps", "5000", "--seed", "2", "--occlude-p", "0.25", "--mine-damaged", "2",
                         "--mine-dark-p", "0.25", "--mine-scenes", "3000", "--mine-seed", "1",
                         "--mine-rolled", "1", "--threads", "2", "--version", "pv-0.6"),
                  init_from_prev=False),
        )),
    # models/corner_refiner.md: cr-0.1, one stage; it mines its crops from the shipped
    # models/detector.onnx first (RUN/crops.npz), so rebuild it after the detector
    "corners": Recipe(
        script="train_corner_refiner.py", output="corner_refiner.onnx", install_as="corner_refiner.onnx",
        folder_option="--run", export_option="--export",
        stages=(
            Stage("c1", ("--steps", "4000", "--seed", "3", "--mine-damaged", "2", "--mine-scenes", "2000",
                         "--mine-jitter", "2", "--mine-seed", "1", "--version", "cr-0.1"),
                  init_from_prev=False),
        )),
}


def stage_dir(runs: Path, stage: Stage) -> Path:
    return runs / stage.name


def command(recipe: Recipe, runs: Path, index: int, python: str = sys.executable) -> list[str]:
    """The command line of stage `index`: its own folder, and the previous stage's model as start."""
    stage = recipe.stages[index]
    here = stage_dir(runs, stage)
    cmd = ["nice", "-n", "10", python, str(ROOT / "scripts" / recipe.script),
           recipe.folder_option, str(here), *stage.args]
    if recipe.export_option:
        cmd += [recipe.export_option, str(here / recipe.output)]
    if stage.init_from_prev:
        if index == 0:
            raise ValueError(f"stage {stage.name} starts from a previous stage but is the first")
        cmd += ["--init", str(stage_dir(runs, recipe.stages[index - 1]) / recipe.output)]
    return cmd


def pending(recipe: Recipe, runs: Path) -> list[int]:
    """Stages still to run: those without a `done` marker (a later stage builds on an earlier one)."""
    for i, stage in enumerate(recipe.stages):
        if not (stage_dir(runs, stage) / "done").is_file():
            return list(range(i, len(recipe.stages)))
    return []


def run(recipe: Recipe, runs: Path, install: bool, dry_run: bool) -> int:
    todo = pending(recipe, runs)
    for i in range(len(recipe.stages)):
        line = shlex.join(command(recipe, runs, i))
        state = "to run" if i in todo else "done, skipped"
        print(f"[{recipe.stages[i].name}] {state}: {line}", flush=True)
        if dry_run or i not in todo:
            continue
        stage = recipe.stages[i]
        here = stage_dir(runs, stage)
        here.mkdir(parents=True, exist_ok=True)
        with open(here / "stdout.log", "a") as log:
            rc = subprocess.run(command(recipe, runs, i), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
        if rc != 0:
            print(f"stage {stage.name} failed with exit status {rc}; see {here / 'stdout.log'}. "
                  "Run the same command again to resume it.", file=sys.stderr)
            return rc
        if not (here / recipe.output).is_file():
            print(f"stage {stage.name} ended without writing {here / recipe.output}", file=sys.stderr)
            return 1
        (here / "done").write_text("finished\n")
    final = stage_dir(runs, recipe.stages[-1]) / recipe.output
    if dry_run:
        return 0
    print(f"final model: {final}")
    if install:
        dest = ROOT / "models" / recipe.install_as
        shutil.copyfile(final, dest)
        print(f"installed as {dest}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(RECIPES), help="which model to rebuild")
    ap.add_argument("--runs", type=Path, default=None,
                    help="folder for the stages' checkpoints (default runs/recipe/<model>)")
    ap.add_argument("--install", action="store_true", help="copy the final model into models/ when all stages are done")
    ap.add_argument("--dry-run", action="store_true", help="print the stage commands and which are done, run nothing")
    args = ap.parse_args(argv)
    runs = args.runs or ROOT / "runs" / "recipe" / args.model
    return run(RECIPES[args.model], runs, args.install, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
