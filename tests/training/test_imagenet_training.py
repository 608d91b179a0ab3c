"""The ImageNet pipeline end to end on the CPU: DeiT's transforms, Mixup / CutMix with SoftTargetCrossEntropy, the
repeated-augmentation sampler, top-1 / top-5 evaluation and hgrn.evaluate, for the HGRN ViTs and timm's DeiT, on a
small ImageFolder and on packaged real images; the recipe's configs; the timm doors to every HGRN image model."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import timm
import torch
from timm.loss import SoftTargetCrossEntropy

import hgrn
from hgrn.config import ConfigError, compose
from hgrn.models.registry import NAMED_BACKBONES
from hgrn.training.build import build_datamodule, build_task
from hgrn.training.config_check import check_config
from hgrn.training.optim import timm_cosine
from hgrn.training.run import evaluate, train
from tests.data.imagenet_folder import packaged_images, write_random_folder

TINY_MODELS = {
    "hgrn2-tiny": ["model.n_layers=1", "model.d_model=16", "model.mixer_options.expand_ratio=4"],
    "hgrn1-tiny": ["model.n_layers=1", "model.d_model=16"],
    "deit-tiny": ["+model.model_args.depth=1", "+model.model_args.embed_dim=16", "+model.model_args.num_heads=2"],
}
CPU_RUN = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "data.num_workers=0",
    "data.pin_memory=false",
    "logger=none",
    "task.compile=false",  # the recipe compiles (GPU speed); test_compile_wraps_... covers that path
]
README = Path(__file__).resolve().parents[2] / "README.md"


def tiny_run(model: str, data_dir: Path, run_dir: Path, *overrides: str):
    return compose(
        f"experiment=imagenet/fashion_mnist/{model}",
        f"paths.output_dir={run_dir}",
        f"data.data_dir={data_dir}",
        *CPU_RUN,
        *TINY_MODELS[model],
        *overrides,
    )


@pytest.mark.parametrize("model", sorted(TINY_MODELS))
def test_the_training_path_on_a_small_imagefolder(model, tmp_path):
    """Mixup, the loss and repeated augmentation in training (40-pixel images: the resize / crop transforms), test at
    the best checkpoint with top-1 / top-5, the lr scaled by the batch as DeiT's."""
    images = write_random_folder(tmp_path / "images")
    cfg = tiny_run(
        model,
        images,
        tmp_path / "run",
        "data.num_classes=4",
        "data.image_size=40",
        "task.patch_size=8",
        "data.batch_size=4",
        "data.repeat_on_one_process=true",
    )
    task = build_task(cfg, build_datamodule(cfg))
    assert task.mixup is not None and isinstance(task.train_criterion, SoftTargetCrossEntropy)
    record = train(cfg, overrides=[])
    assert record.steps == 8  # 32 images in batches of 4; repeats keep the epoch's length
    assert {"test/acc", "test/acc_top5", "test/loss"} <= set(record.metrics)
    assert record.metrics["test/acc"] <= record.metrics["test/acc_top5"] == 1.0  # 4 classes: top-5 holds them all
    assert math.isclose(record.config["effective"]["lr"], cfg.optim.lr * 4 / 512)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["throughput"]["train_samples_per_s"] > 0


def test_packaged_real_images_train_and_evaluate(tmp_path):
    """The Fashion-MNIST recipe (28-pixel images, 4 x 4 patches) on real packaged images, then hgrn.evaluate on the
    best checkpoint."""
    _, images = packaged_images(tmp_path, per_class=4)
    cfg = tiny_run("hgrn2-tiny", images, tmp_path / "run", "data.batch_size=8")
    record = train(cfg, overrides=[])
    assert record.steps == 5 and 0.0 <= record.metrics["test/acc"] <= 1.0
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    eval_cfg = compose(
        "experiment=imagenet/fashion_mnist/hgrn2-tiny",
        f"paths.output_dir={tmp_path / 'eval'}",
        f"data.data_dir={images}",
        f"ckpt_path={checkpoint}",
        *CPU_RUN,
        config_name="eval",
    )
    evaluation = evaluate(eval_cfg, overrides=[])
    assert evaluation.metrics["test/acc"] == pytest.approx(record.metrics["test/acc"])
    assert "test/acc_top5" in evaluation.metrics


def test_an_odd_batch_is_refused_in_one_line_before_training(tmp_path):
    images = write_random_folder(tmp_path / "images", {"train": 2, "val": 1})
    cfg = tiny_run("hgrn2-tiny", images, tmp_path / "run", "data.num_classes=4", "data.batch_size=3")
    with pytest.raises(ConfigError, match=r"data.batch_size=3 must be even: timm's Mixup"):
        train(cfg, overrides=[])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.timm_model=deit_tiny_patch16", r"model: timm_model='deit_tiny_patch16' is not a timm model"),
        ("+model.depth=2", r"model.depth: Key 'depth' not in 'TimmModelConfig'"),
    ],
)
def test_a_bad_timm_model_is_one_line_naming_the_key(override, message):
    cfg = compose("experiment=imagenet/deit-tiny", "paths.output_dir=RUN", override)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_deit_schedule_steps_by_epoch_as_deit():
    """timm's cosine: warm-up from 1e-6 over 2 epochs, then the cosine over all 10 epochs down towards 1e-5."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = timm_cosine(optimizer, epochs=10, warmup_epochs=2)["scheduler"]
    lrs = [optimizer.param_groups[0]["lr"]]
    for epoch in range(10):
        scheduler.step(epoch=epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[:3] == pytest.approx([1e-6, 1e-6, 1e-6 + (1e-3 - 1e-6) / 2])
    assert lrs[3] == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * 2 / 10)) / 2)


def test_the_recipe_is_deits_through_timm():
    cfg = compose("experiment=imagenet/hgrn2-tiny", "paths.output_dir=RUN", "trainer=ddp", "trainer.devices=8")
    assert cfg.data.batch_size == 128 and cfg.optim.lr == 0.00075 and cfg.trainer.max_epochs == 300
    assert (cfg.data.auto_augment, cfg.data.color_jitter, cfg.data.re_prob) == ("rand-m9-mstd0.5-inc1", 0.4, 0.25)
    assert (cfg.data.interpolation, cfg.data.crop_pct, cfg.data.repeats) == ("bicubic", 0.875, 3)
    assert (cfg.task.mixup_alpha, cfg.task.cutmix_alpha, cfg.task.label_smoothing) == (0.8, 1.0, 0.1)
    assert cfg.task.lr_reference_batch == 512 and cfg.sched._target_ == "hgrn.training.optim.timm_cosine"
    assert cfg.trainer.precision == "bf16-mixed" and cfg.data.pin_memory


@pytest.mark.parametrize(
    ("experiment", "timm_name"),
    [("imagenet/hgrn2-tiny", "hgrn2_vit_tiny"), ("imagenet/hgrn1-tiny", "hgrn1_vit_tiny")],
)
def test_the_experiments_train_the_model_timm_builds(experiment, timm_name):
    cfg = compose(f"experiment={experiment}", "paths.output_dir=RUN")
    with torch.device("meta"):
        ours = build_task(cfg, build_datamodule(cfg)).model
        theirs = timm.create_model(timm_name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("model", ["hgrn2-tiny", "deit-tiny"])
def test_compile_wraps_parts_or_blocks_or_a_timm_model_whole(model, tmp_path):
    """task.compile: 'parts' compiles the HGRN backbone's norms and GLUs in place (mixers eager), 'blocks' and
    'graphs' each block whole, a timm model is compiled whole for any; the parameter names (checkpoints) stay those
    of the eager model; any other value is one config error."""
    tasks = {
        choice: build_task(cfg, build_datamodule(cfg))
        for choice in (False, "parts", "blocks", "graphs")
        for cfg in [tiny_run(model, tmp_path, tmp_path / "run", f"task.compile={choice}")]
    }
    names = {choice: [name for name, _ in task.model.named_parameters()] for choice, task in tasks.items()}
    assert names["parts"] == names["blocks"] == names["graphs"] == names[False]
    assert tasks[False].model._compiled_call_impl is None
    for choice in ("parts", "blocks", "graphs"):
        compiled = tasks[choice].model
        if model == "deit-tiny":
            assert compiled._compiled_call_impl is not None
            continue
        block = compiled.backbone.blocks[0]
        assert (block._compiled_call_impl is not None) == (choice != "parts")
        assert (block.glu._compiled_call_impl is not None) == (choice == "parts")
        assert block.mixer._compiled_call_impl is None and compiled._compiled_call_impl is None
    cfg = tiny_run(model, tmp_path, tmp_path / "run", "task.compile=true")
    with pytest.raises(ConfigError, match=r"^task: compile=True: choose false, parts, blocks or graphs$"):
        build_task(cfg, build_datamodule(cfg))


@pytest.mark.gpu
@pytest.mark.parametrize("model", sorted(TINY_MODELS))
def test_the_recipe_trains_under_cuda_graphs_on_a_gpu(model, tmp_path):
    """The recipe's compile ('graphs': CUDA graphs replayed through training, validation and test, where a batch of
    another size records anew: 20 validation images in batches of 8) trains two epochs and evaluates, finitely."""
    images = write_random_folder(tmp_path / "images", {"train": 9, "val": 5})
    cfg = compose(
        f"experiment=imagenet/fashion_mnist/{model}",
        f"paths.output_dir={tmp_path / 'run'}",
        f"data.data_dir={images}",
        "trainer.max_epochs=2",
        "data.num_workers=0",
        "logger=none",
        "data.num_classes=4",
        "data.image_size=40",
        "task.patch_size=8",
        "data.batch_size=8",
        "data.repeat_on_one_process=true",
        *TINY_MODELS[model],
    )
    assert cfg.task.compile == "graphs" and cfg.trainer.accelerator == "gpu"
    record = train(cfg, overrides=[])
    assert record.steps >= 8
    assert math.isfinite(record.metrics["test/loss"]) and 0.0 <= record.metrics["test/acc"] <= 1.0


def test_timm_builds_every_registered_hgrn_model():
    names = sorted(name.replace("-", "_") for name, (kind, _) in NAMED_BACKBONES.items() if kind == "vit")
    assert hgrn.models is not None and names == sorted(timm.list_models("hgrn*"))
    for name in names:
        model = timm.create_model(name, img_size=28, num_classes=10)
        assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 10), name


def test_the_readme_gives_the_parameter_counts_the_models_have():
    """The README's ImageNet table: each model's parameters as the experiments build them (1000 classes, 224)."""
    section = README.read_text().split("## ImageNet-1K", 1)[1].split("\n## ", 1)[0]
    for model in ("hgrn2-tiny", "hgrn2-small", "hgrn1-tiny", "hgrn1-small", "deit-tiny", "deit-small"):
        cfg = compose(f"experiment=imagenet/{model}", "paths.output_dir=RUN")
        with torch.device("meta"):
            count = build_task(cfg, build_datamodule(cfg)).num_parameters()
        row = re.search(rf"^\| `imagenet/{model}` .*$", section, re.MULTILINE)
        assert row and f"{count:,}" in row.group(0), (model, count)
