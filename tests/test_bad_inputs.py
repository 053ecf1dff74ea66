"""Bad input (configs, data, paths, flags): exit code 2, one line on stderr naming the key and
the way out, no traceback, and nothing written: every case is refused before a run folder exists.

One table: each row is the command line, a fragment of the expected message and, where the case
needs files (a damaged image, a corrupt summary.json), the function that writes them first.
``{tmp}`` in an argument is the test's folder, which is also the working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paralab.cli import main

RUN = ["run", "quickstart_offline"]
FED = ["run", "quickstart_federated"]
VIT = [*RUN, "model=vit"]


def _images(folder: Path, classes=("cat", "dog"), n: int = 3) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in classes:
        (folder / cls).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / cls / f"{i}.png")


def one_class(tmp: Path, mp) -> None:
    _images(tmp / "imgs", classes=("cat",))


def not_an_image(tmp: Path, mp) -> None:
    _images(tmp / "imgs")
    (tmp / "imgs" / "dog" / "notes.png").write_text("not an image")


def truncated_image(tmp: Path, mp) -> None:
    _images(tmp / "imgs")
    png = tmp / "imgs" / "cat" / "0.png"
    png.write_bytes(png.read_bytes()[:120])


def a_file(tmp: Path, mp) -> None:
    (tmp / "file").write_text("x")


def read_only(tmp: Path, mp) -> None:
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: let the permission check see what a user would
        real = os.access
        mp.setattr(os, "access", lambda p, m, **k: Path(p) != folder and real(p, m, **k))


def bad_config_yaml(tmp: Path, mp) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / "config.yaml").write_text("name: [unclosed\n  seed: : 1\n")


def bad_summary(tmp: Path, mp) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / "summary.json").write_text('{"name": "x", "metrics": {')


def bad_comparison(tmp: Path, mp) -> None:
    (tmp / "bench").mkdir()
    (tmp / "bench" / "comparison.json").write_text('{"rows": [')


def bad_suite_summary(tmp: Path, mp) -> None:
    run = tmp / "bench" / "offline-20250101-000000"
    run.mkdir(parents=True)
    (tmp / "bench" / "suite.json").write_text('{"suite": "quickstart", "overrides": []}')
    (run / "config.yaml").write_text("name: offline\n")
    (run / "summary.json").write_text("{truncated")


IMGS = ["data=image_folder", "data.path={tmp}/imgs"]

SEG = [*RUN, "task=segmentation", "data=canvas_digits", "data.train_images=40",
       "data.test_images=10"]  # fmt: skip

DET = [*RUN, "task=detection", "data=canvas_digits_boxes", "model=fcos", "data.train_images=40",
       "data.test_images=10", "data.items_min=3", "data.items_max=3",
       "model.backbone={name:cnn,channels:[8,16,32,64]}"]  # fmt: skip

CASES = [
    # the task seam: data, model, continual method and scenario, federated attack must fit
    ([*RUN, "task=segmentation"], "task=segmentation needs a segmentation dataset", None),
    ([*RUN, "task=detect"], "unknown task 'detect'", None),
    ([*RUN, "data=canvas_digits"], "task=classification needs a classification dataset", None),
    ([*SEG, "model=cnn"], "model=cnn is a classification model; task=segmentation needs", None),
    ([*SEG, "model=unet", "paradigm=continual", "paradigm.strategy=icarl"],
     "paradigm.strategy=icarl does not support task=segmentation", None),
    ([*SEG, "model=unet", "paradigm=continual", "paradigm.plugins=[lwf]"],
     "paradigm.plugins: lwf does not support task=segmentation", None),
    ([*SEG, "model=unet", "paradigm=continual", "paradigm.scenario=task"],
     "paradigm.scenario=task does not apply to task=segmentation", None),
    ([*RUN, "model=unet"], "model=unet is a segmentation model; task=classification", None),
    # detection: methods that need class logits or raw images, scenarios, queries, crops
    ([*DET, "paradigm=continual", "paradigm.strategy=icarl"],
     "paradigm.strategy=icarl does not support task=detection", None),
    ([*DET, "paradigm=continual", "paradigm.strategy=ewc"],
     "paradigm.strategy=ewc does not support task=detection", None),
    ([*DET, "paradigm=continual", "paradigm.scenario=domain"],
     "paradigm.scenario=domain does not apply to task=detection", None),
    ([*DET, "model=detr", "model.num_queries=2"], "Set model.num_queries=3 or more", None),
    ([*DET, "data.augment=[crop]"], "holds boxes, which a crop would cut", None),
    ([*DET, "model.feature_levels=4"], "model.feature_levels=4: model.backbone has 3", None),
    ([*DET, "model=unet"], "model=unet is a segmentation model; task=detection needs", None),
    # unknown names and keys, wrong types, malformed overrides (the errors paralab had already)
    (["run", "nope"], "unknown experiment 'nope'", None),
    ([*RUN, "model=cnnn"], "unknown model 'cnnn' (did you mean 'cnn'?)", None),
    ([*RUN, "model.name=foo"], "unknown model 'foo'. Choose one of: clip, cnn", None),
    ([*RUN, "trainer.max_epoch=3"], "'trainer.max_epoch' (did you mean 'max_epochs'?)", None),
    ([*RUN, "model.widht=3"], "Valid keys under 'model': name, init_from, channels", None),
    ([*VIT, "model.channels=[3]"], "'model.channels'", None),
    ([*RUN, "foo=1"], "unknown config key 'foo'", None),
    ([*RUN, "trainer.max_epochs=abc"], "trainer.max_epochs", None),
    ([*RUN, "trainer.max_epochs"], "is not key=value", None),
    ([*RUN, "optim.name=lion"], "optim.name='lion': choose one of sgd", None),
    ([*RUN, "tracking.wandb=x"], "tracking.wandb='x': choose one of offline", None),
    ([*RUN, "data.augment=[blur]"], "unknown entry 'blur'; choose from hflip, crop", None),
    ([*RUN, "data=image_folder"], "data.path is required", None),
    ([*RUN, "data=cifar10"], "dataset 'cifar10' is not on disk", None),
    (["bench", "nope"], "unknown benchmark suite 'nope'", None),
    (["run", "--resume", "/nonexistent/run"], "no config.yaml there", None),
    (["compare", "/nonexistent/run"], "holds no summary.json", None),
    (["report", "/nonexistent/bench"], "holds no comparison.json", None),
    # data
    ([*RUN, "data.batch_size=0"], "data.batch_size=0: must be an integer >= 1. Set e.g.", None),
    ([*RUN, "data.eval_batch_size=0"], "data.eval_batch_size=0: must be an integer >= 1", None),
    ([*RUN, "data.num_workers=-1"], "data.num_workers=-1: must be an integer >= 0", None),
    ([*RUN, "data.test_fraction=0"], "test_fraction=0.0: must be a finite number in (0, 1)", None),
    ([*RUN, "data.test_fraction=1"], "data.test_fraction=1.0: must be", None),
    ([*RUN, "data.val_fraction=1"], "val_fraction=1.0: must be a finite number in [0, 1)", None),
    ([*RUN, "data.train_limit=0"], "data.train_limit=0: must be an integer >= 1, or null", None),
    ([*RUN, *IMGS, "data.image_size=0"], "data.image_size=0: must be an integer >= 1", None),
    ([*RUN, *IMGS], "holds 1 class folder(s) ['cat']; classification needs at least 2", one_class),
    ([*RUN, *IMGS], "notes.png (not an image PIL can read). Remove or replace", not_an_image),
    ([*RUN, *IMGS], "0.png (image file is truncated", truncated_image),
    # models, including what a library would refuse only when the run starts
    ([*VIT, "model.dim=0"], "model.dim=0: must be an integer >= 1", None),
    ([*VIT, "model.patch_size=0"], "model.patch_size=0: must be an integer >= 1", None),
    ([*VIT, "model.heads=0"], "model.heads=0: must be an integer >= 1", None),
    ([*VIT, "model.depth=0"], "model.depth=0: must be an integer >= 1", None),
    ([*VIT, "model.dropout=1"], "model.dropout=1.0: must be a finite number in [0, 1)", None),
    ([*VIT, "model.patch_size=3"], "does not divide the image size 8x8", None),
    ([*VIT, "model.dim=30", "model.heads=4"], "model.dim=30 must be divisible by", None),
    ([*RUN, "model.channels=[0]"], "model.channels=[0]: each entry must be an integer >= 1", None),
    ([*RUN, "model.channels=[]"], "model.channels=[]: must list at least 1", None),
    ([*RUN, "model.dropout=-0.1"], "model.dropout=-0.1: must be a finite number in [0, 1)", None),
    ([*RUN, "model.convs_per_stage=0"], "model.convs_per_stage=0: must be", None),
    # optimizer
    ([*RUN, "optim.lr=nan"], "optim.lr=nan: must be a finite number > 0", None),
    ([*RUN, "optim.lr=inf"], "optim.lr=inf: must be a finite number > 0", None),
    ([*RUN, "optim.lr=0"], "optim.lr=0.0: must be a finite number > 0", None),
    ([*RUN, "optim.weight_decay=-1"], "weight_decay=-1.0: must be a finite number >= 0", None),
    ([*RUN, "optim.momentum=-0.5"], "optim.momentum=-0.5: must be a finite number in [0, 1)", None),
    ([*RUN, "optim.label_smoothing=1"], "optim.label_smoothing=1.0: must be", None),
    ([*RUN, "optim.warmup_epochs=-1"], "optim.warmup_epochs=-1: must be an integer >= 0", None),
    ([*RUN, "optim.step_size=0", "optim.scheduler=step"], "optim.step_size=0: must be", None),
    ([*RUN, "optim.name=sgd", "optim.nesterov=true", "optim.momentum=0"],
     "optim.nesterov=true needs momentum", None),
    # trainer (Lightning's own choices, and combinations Lightning refuses when it starts)
    ([*RUN, "trainer.max_epochs=0"], "trainer.max_epochs=0: must be an integer >= 1", None),
    ([*RUN, "trainer.devices=0"], "trainer.devices=0: must be a number of devices >= 1", None),
    ([*RUN, "trainer.check_val_every_n_epoch=0"], "check_val_every_n_epoch=0: must be", None),
    ([*RUN, "trainer.accelerator=tpuu"], "choose one of auto, cpu, cuda, gpu, mps, tpu", None),
    ([*RUN, "trainer.precision=17"], "precision='17': choose one of 32-true, 16-mixed", None),
    ([*RUN, "trainer.strategy=dpp"], "trainer.strategy='dpp': choose one of auto, ddp", None),
    ([*RUN, "trainer.num_threads=0"], "num_threads=0: must be an integer >= 1, or null", None),
    ([*RUN, "trainer.num_nodes=0"], "trainer.num_nodes=0: must be an integer >= 1", None),
    ([*RUN, "trainer.limit_train_batches=0"], "a fraction of them in (0, 1]", None),
    ([*RUN, "trainer.deterministic=maybe"], "choose one of true, false, warn", None),
    ([*RUN, "trainer.accelerator=cpu", "trainer.devices=[0]"], "Lightning refuses", None),
    ([*RUN, "trainer.strategy=deepspeed"], "Lightning refuses this combination", None),
    # run-level keys: seed, names and folders
    ([*RUN, "seed=-1"], "seed=-1: must be an integer in [0, 4294967295] (numpy's", None),
    ([*RUN, "seed=4294967296"], "seed=4294967296: must be an integer in [0, 4294967295]", None),
    ([*RUN, "name=../../escape"], "name='../../escape': a run name becomes one folder", None),
    ([*RUN, "name=${oc.env:HOME}"], f"name={os.environ['HOME']!r}: a run name becomes", None),
    ([*RUN, "name=a b"], "may hold only letters, digits", None),
    ([*RUN, "name=" + "x" * 300], "too long for a folder name (300 bytes)", None),
    ([*RUN, "output_dir={tmp}/file"], "file is a file, not a folder", a_file),
    ([*RUN, "output_dir={tmp}/file/runs"], "lies under the file", a_file),
    ([*RUN, "output_dir={tmp}/ro/runs"], "cannot create folders in", read_only),
    ([*RUN, "hydra.run.dir=x"], "paralab does not use Hydra's own settings", None),
    ([*RUN, "name=é"], """Write it as 'name="é"'""", None),
    ([*RUN, "modèle=cnn"], "'modèle' is not a config key; keys are ASCII", None),
    # paradigms
    ([*FED, "paradigm.partition.alpha=nan"], "paradigm.partition.alpha=nan: must be", None),
    ([*FED, "paradigm.partition.alpha=0"], "paradigm.partition.alpha=0.0: must be", None),
    ([*FED, "paradigm.faults.straggler_delay_s=-1"], "straggler_delay_s=-1.0: must be", None),
    (["run", "quickstart_continual", "paradigm.ewc_decay=2"], "paradigm.ewc_decay=2.0", None),
    # flags and files given to the other commands
    (["bench", "quickstart", "--only", ","], "--only ',' names no run", None),
    (["bench", "quickstart", "--output-dir", "{tmp}/file"], "--output-dir", a_file),
    (["run", "--resume", "{tmp}/run"], "config.yaml is not valid YAML", bad_config_yaml),
    (["compare", "{tmp}/run"], "run/summary.json is not valid JSON", bad_summary),
    (["report", "{tmp}/bench"], "comparison.json is not valid JSON", bad_comparison),
    (["bench", "--resume", "{tmp}/bench"], "summary.json is not valid JSON", bad_suite_summary),
]  # fmt: skip


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize(
    ("argv", "message", "setup"), CASES, ids=[" ".join(c[0][1:])[:60] for c in CASES]
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    argv, message, setup, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    if setup:
        setup(tmp_path, monkeypatch)
    before = _listing(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "run" and "--resume" not in argv and not any("output_dir=" in a for a in argv):
        argv.append(f"output_dir={tmp_path / 'runs'}")
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("paralab: error: ")
    assert message in lines[0]
    assert "Traceback" not in err
    assert _listing(tmp_path) == before  # no run folder, no suite folder, nothing else


@pytest.mark.parametrize(
    "args",
    [
        ["run", "quickstart_offline", "data.batch_size=0"],
        ["run", "quickstart_offline", "name=../../escape"],
        ["run", "quickstart_offline", "name=é"],
        ["compare", "run"],
    ],
)
def test_the_real_process_prints_one_line_and_no_traceback(args, tmp_path):
    bad_summary(tmp_path, None)
    before = _listing(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "paralab", *args], cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("paralab: error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert _listing(tmp_path) == before


def test_lightning_choices_match_lightning():
    """The accelerators, precisions and strategies paralab accepts up front are Lightning's."""
    from typing import get_args

    from lightning.fabric import connector
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    from paralab.platform.schema import ACCELERATORS, LIGHTNING_STRATEGIES, PRECISIONS

    precisions = {str(p) for p in get_args(connector._PRECISION_INPUT_STR)}
    precisions |= {str(p) for p in get_args(connector._PRECISION_INPUT_STR_ALIAS)}
    hint = "Lightning changed what it accepts: update the tuples in paralab/platform/schema.py"
    assert set(PRECISIONS) == precisions, hint
    assert set(ACCELERATORS) == {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}, hint
    assert set(LIGHTNING_STRATEGIES) == {"auto", *StrategyRegistry.available_strategies()}, hint
