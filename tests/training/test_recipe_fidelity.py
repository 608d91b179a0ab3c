"""Issue 19: every LRA and MQAR experiment does what the official run did (conf/DEVIATIONS.md lists what remains).

Each test composes an experiment, builds what a run builds from it (datamodule, task, optimiser, schedule, trainer,
callbacks) and checks the behaviour against the official code's, restated here from the primary sources
(transformers' schedule, s4's position encoder, the lra pipeline, Zoology's model and trainer), not from the code
under test.
"""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from PIL import Image
from torch import nn

from hgrn.config import ConfigError
from hgrn.data.lra.pathfinder import DIFFICULTY, PathfinderDataModule
from hgrn.data.mqar import IGNORE_INDEX
from hgrn.layers.norms import SequenceBatchNorm
from hgrn.models import create_model
from hgrn.training.build import build_callbacks, build_datamodule, build_task, build_trainer
from hgrn.training.optim import cosine_warmup

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lra"
LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
CIFAR_TRAIN_IMAGES = 45_000  # LRA Image's training split (50k less the 5k validation images)


def build(make_config, experiment: str, *overrides: str):
    """(config, datamodule, task) of an experiment, without reading any data."""
    cfg = make_config(f"experiment={experiment}", *overrides, logger="none")
    datamodule = build_datamodule(cfg)
    return cfg, datamodule, build_task(cfg, datamodule)


def transformers_cosine(step: int, warmup: int, total: int) -> float:
    """transformers.get_cosine_schedule_with_warmup's factor (num_cycles 0.5), which the official LRA code steps."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def lr_trace(task, steps: int) -> list[float]:
    """The learning rate of each of the first `steps` optimiser steps, as the run's scheduler sets it (stepped alone:
    an optimiser step would only cost time here)."""
    configured = task.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    trace = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")
        for _ in range(steps):
            trace.append(optimizer.param_groups[0]["lr"])
            scheduler.step()
    return trace


def test_hgrn1_image_lr_rises_back_to_peak_past_the_schedule_as_transformers(make_config):
    """HGRN1 Image runs 90k steps on a 50k-step schedule; the official (unclamped) lr is back at its peak at 70k."""
    cfg, _, task = build(make_config, "lra/hgrn1/image")
    run_steps = cfg.trainer.max_epochs * CIFAR_TRAIN_IMAGES // cfg.data.batch_size
    assert run_steps == 90_000 and cfg.sched.total_steps == 50_000
    trace = lr_trace(task, run_steps)
    peak, warmup, total = cfg.optim.lr, cfg.sched.warmup_steps, cfg.sched.total_steps
    for step in (0, 1, 15_000, 29_999, 30_000, 40_000, 50_000, 60_000, 70_000, 89_999):
        assert trace[step] == pytest.approx(peak * transformers_cosine(step, warmup, total), abs=1e-12), step
    assert trace[50_000] == pytest.approx(0.0, abs=1e-12) and trace[70_000] == pytest.approx(peak)


def test_the_clamped_schedule_stays_an_option(make_config):
    _, _, task = build(make_config, "lra/hgrn1/image", "sched.past_total=hold")
    trace = lr_trace(task, 70_001)
    assert trace[50_000] == trace[70_000] == 0.0


def sinusoid(length: int, dim: int) -> np.ndarray:
    """s4's PositionalEncoder table, written out: pe[t, 2i] = sin(t / 10000^(2i/d)), pe[t, 2i+1] = cos(...)."""
    table = np.zeros((length, dim))
    for t in range(length):
        for i in range(0, dim, 2):
            angle = t / 10000 ** (i / dim)
            table[t, i] = math.sin(angle)
            if i + 1 < dim:
                table[t, i + 1] = math.cos(angle)
    return table


def test_listops_adds_fixed_sinusoids_after_the_embedding_then_drops_out(make_config):
    _, _, task = build(make_config, "lra/hgrn2/listops")
    model = task.model
    seen = {}
    model.backbone.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    ids = torch.randint(1, 10, (2, 50))
    model.eval()
    model(ids, torch.ones_like(ids, dtype=torch.bool))
    expected = model.encoder(ids) + torch.from_numpy(sinusoid(50, model.encoder.embedding_dim)).float()
    torch.testing.assert_close(seen["x"], expected, atol=1e-5, rtol=1e-5)
    assert not list(model.position.parameters())  # fixed, not learned

    model.train()
    torch.manual_seed(0)
    dropped = model.position(torch.full((4, 2000, model.encoder.embedding_dim), 5.0)) == 0  # x + pe is never 0
    assert dropped.float().mean().item() == pytest.approx(0.1, abs=0.01)  # Dropout(0.1), even at model.dropout 0


@pytest.mark.parametrize(
    ("experiment", "positional"),
    [("lra/hgrn2/text", False), ("lra/hgrn1/text", True), ("lra/hgrn2/pathfinder", False), ("lra/hgrn2/pathx", True)],
)
def test_each_recipe_uses_the_position_encoder_where_its_script_does(experiment, positional, make_config):
    _, _, task = build(make_config, experiment)
    assert (task.model.position is not None) == positional


def test_the_learned_position_embedding_stays_an_option(make_config):
    _, _, task = build(make_config, "lra/hgrn2/listops", "task.position_encoding=learned")
    assert [name for name, _ in task.model.position.named_parameters()] == ["weight"]


def test_lra_models_keep_pytorch_default_init_and_the_lm_keeps_its_own(make_config):
    _, _, task = build(make_config, "lra/hgrn2/listops")
    model = task.model
    assert model.encoder.weight.std().item() == pytest.approx(1.0, abs=0.1)  # nn.Embedding: N(0, 1)
    in_proj = model.backbone.blocks[0].mixer.in_proj
    bound = 1 / math.sqrt(in_proj.in_features)  # nn.Linear: kaiming_uniform(a=sqrt(5)), bias U(-bound, bound)
    assert in_proj.weight.abs().max().item() <= bound
    assert in_proj.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert in_proj.bias.abs().max().item() > 0

    lm = create_model("hgrn2-lm-base", backbone={"n_layers": 1})
    assert lm.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert lm.backbone.blocks[0].mixer.out_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("task_name", LRA_TASKS)
def test_hgrn1_lra_trains_in_fp32_and_hgrn2_in_bf16(task_name, make_config):
    for model, precision in (("hgrn1", "32-true"), ("hgrn2", "bf16-mixed")):
        cfg = make_config(f"experiment=lra/{model}/{task_name}", "trainer.accelerator=cpu", logger="none")
        assert build_trainer(cfg, [], []).precision == precision


def test_an_hgrn1_lra_forward_runs_in_fp32_where_hgrn2_runs_in_bf16(make_config):
    ids = torch.randint(1, 10, (2, 40))
    for model, dtype in (("hgrn1", torch.float32), ("hgrn2", torch.bfloat16)):
        cfg, _, task = build(make_config, f"lra/{model}/listops", "trainer.accelerator=cpu")
        trainer = build_trainer(cfg, [], [])
        with trainer.precision_plugin.forward_context():
            assert task.model(ids).dtype == dtype


@pytest.mark.parametrize("task_name", ["pathfinder", "pathx"])
def test_pathfinder_reads_one_normalised_channel_through_a_linear_map(task_name, make_config, tmp_path):
    data_dir = FIXTURES / ("pathfinder/pathfinder32" if task_name == "pathfinder" else "pathx/pathfinder128")
    cfg, datamodule, task = build(
        make_config,
        f"lra/hgrn2/{task_name}",
        f"data.data_dir={shutil.copytree(data_dir, tmp_path / 'data')}",
        f"+data.cache_dir={tmp_path / 'cache'}",
        "data.batch_size=2",
        "data.num_workers=0",
    )
    encoder = task.model.encoder
    assert isinstance(encoder, nn.Linear) and encoder.in_features == 1
    datamodule.setup()
    dataset = datamodule.splits["train"]
    first = dataset[0]["inputs"]
    side = cfg.data.resolution
    assert first.shape == (side * side, 1) and first.dtype == torch.float32
    pixels = np.asarray(dataset.dataset.columns["inputs"].pixels[dataset.indices[0]], dtype=np.float64)
    normalised = (pixels / 255 - 0.5) / 0.5  # torchvision ToTensor, then Normalize(mean=0.5, std=0.5)
    np.testing.assert_allclose(first[:, 0].numpy(), normalised, atol=1e-6)
    batch = next(iter(datamodule.train_dataloader()))
    assert encoder(batch["inputs"]).shape == (2, side * side, cfg.model.d_model)


def test_pathfinder_pixels_are_the_images_values(tmp_path):
    """The normalised values come from the PNG's intensities (the cache holds the decoded images)."""
    root = FIXTURES / "pathfinder" / "pathfinder32"
    module = PathfinderDataModule(root, tokenize=False, cache_dir=tmp_path)
    module.setup()
    dataset = module.splits["train"].dataset
    png = np.asarray(Image.open(root / DIFFICULTY / "imgs" / "0" / "sample_0.png"), dtype=np.float64)
    np.testing.assert_allclose(dataset[0]["inputs"][:, 0].numpy(), png.reshape(-1) / 127.5 - 1, atol=1e-6)
    assert (module.input_dim, module.vocab_size) == (1, None)


def test_the_pixel_token_embedding_stays_an_option(make_config):
    _, _, task = build(make_config, "lra/hgrn2/pathfinder", "data.tokenize=true")
    assert isinstance(task.model.encoder, nn.Embedding) and task.model.encoder.num_embeddings == 257


def decays_every_parameter(task, weight_decay: float) -> None:
    """One AdamW step on zero gradients moves only by the decoupled decay, p <- p (1 - lr wd): check every tensor."""
    optimizer = task.configure_optimizers()["optimizer"]
    parameters = list(task.model.parameters())
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(parameters)
    for group in optimizer.param_groups:
        group["lr"] = 0.5
    before = [p.detach().clone() for p in parameters]
    for p in parameters:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for old, new in zip(before, parameters, strict=True):
        torch.testing.assert_close(new.detach(), old * (1 - 0.5 * weight_decay))


@pytest.mark.parametrize(("experiment", "weight_decay"), [("lra/hgrn1/listops", 0.01), ("mqar/hgrn2", 0.1)])
def test_adamw_decays_every_parameter_as_the_official_optimiser(experiment, weight_decay, make_config):
    _, _, task = build(make_config, experiment)
    assert task.optim_factory.keywords["weight_decay"] == weight_decay
    decays_every_parameter(task, weight_decay)


def test_the_decay_exemptions_stay_an_option(make_config):
    _, _, task = build(make_config, "lra/hgrn1/listops", "optim.decay_every_parameter=false")
    groups = task.configure_optimizers()["optimizer"].param_groups
    assert [group["weight_decay"] for group in groups] == [0.01, 0.0]


def test_text_drops_the_glu_gate_with_the_models_dropout(make_config):
    _, _, task = build(make_config, "lra/hgrn2/text")
    glu = task.model.backbone.blocks[0].glu
    glu.train()
    x = torch.randn(2, 5, glu.gate_proj.in_features)
    torch.manual_seed(1)
    out = glu(x)
    gate = F.silu(glu.gate_proj(x))
    torch.manual_seed(1)
    mask = F.dropout(torch.ones_like(gate), 0.1)  # the official GLU: dropout(act(l1 x)) * l2 x, then l3
    torch.testing.assert_close(out, glu.down_proj(gate * mask * glu.up_proj(x)))


@pytest.mark.parametrize(
    ("experiment", "reaches_back"),
    [
        ("lra/hgrn1/listops", True),
        ("lra/hgrn1/text", True),
        ("lra/gla/retrieval", True),
        ("lra/hgrn2/listops", False),
        ("lra/hgrn2/retrieval", False),
    ],
)
def test_the_scans_see_the_padding_as_the_official_ones(experiment, reaches_back, make_config):
    """Pooling averages the real tokens, but the scans run over the pads (they are not masked): a bidirectional
    model's backward scan carries them into the real tokens, HGRN2's one-way scan (as Hgru2_1d) never reaches back."""
    ids = torch.randint(2, 10, (1, 30))
    padded = torch.cat([ids, torch.zeros(1, 20, dtype=torch.long)], 1)
    mask = torch.arange(50)[None] < 30
    for mask_padding, same in ((False, not reaches_back), (True, True)):
        _, _, task = build(make_config, experiment, f"task.mask_padding={str(mask_padding).lower()}")
        model = task.model.eval()
        short, long = model.encode(ids, torch.ones_like(ids, dtype=torch.bool)), model.encode(padded, mask)
        assert torch.allclose(short, long, atol=1e-5) == same


def test_hgrn2_pathfinder_batch_norm_takes_statistics_per_16_sequences(make_config):
    cfg, _, task = build(make_config, "lra/hgrn2/pathfinder")
    norms = [m for m in task.model.modules() if isinstance(m, SequenceBatchNorm)]
    assert norms and all(norm.group_size == 16 for norm in norms)
    norm = norms[0].train()
    x = torch.randn(cfg.data.batch_size, 10, norm.norm.num_features) * 3 + 1
    one_gpu = torch.nn.BatchNorm1d(norm.norm.num_features)  # one official GPU's own norm over its 16 sequences
    expected = [one_gpu(group.transpose(1, 2)).transpose(1, 2) for group in x.split(16)]
    torch.testing.assert_close(norm(x), torch.cat(expected), atol=1e-5, rtol=1e-5)
    # the running statistics are the first GPU's (DDP broadcasts them): one update from the first 16 sequences
    first_gpu = torch.nn.BatchNorm1d(norm.norm.num_features)
    first_gpu(x[:16].transpose(1, 2))
    torch.testing.assert_close(norm.norm.running_mean, first_gpu.running_mean)
    torch.testing.assert_close(norm.norm.running_var, first_gpu.running_var)


def test_unsynchronised_recipes_stay_so_on_several_gpus_and_hgrn1s_own_use_whole_batches(make_config):
    for task_name in ("pathfinder", "pathx"):
        cfg = make_config(f"experiment=lra/hgrn2/{task_name}", "trainer=ddp", "trainer.devices=8", logger="none")
        assert cfg.trainer.sync_batchnorm is False
    assert make_config("experiment=lra/hgrn2/pathfinder", "trainer=ddp", "trainer.devices=8").data.batch_size == 16
    assert make_config("experiment=lra/hgrn2/listops", "trainer=ddp", "trainer.devices=8").trainer.sync_batchnorm
    _, _, task = build(make_config, "lra/hgrn1/pathfinder")
    assert all(m.group_size is None for m in task.model.modules() if isinstance(m, SequenceBatchNorm))


def test_synchronised_batch_norm_keeps_the_sequence_layout():
    """Lightning's sync_batchnorm swaps every BatchNorm for a SyncBatchNorm: the [B, T, D] transposition survives."""
    norm = SequenceBatchNorm(6)
    x = torch.randn(4, 9, 6)
    expected = norm(x)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(SequenceBatchNorm(6)))[0]
    assert isinstance(synced, SequenceBatchNorm) and isinstance(synced.norm, torch.nn.SyncBatchNorm)
    torch.testing.assert_close(synced(x), expected)


TINY_MQAR = ("data.train_examples=1024", "data.test_examples=64")


def test_mqar_batches_have_zero_fillers_and_a_fixed_order(make_config):
    cfg, datamodule, _ = build(make_config, "mqar/hgrn2", *TINY_MQAR)
    assert (cfg.data.seq_len, cfg.data.num_kv_pairs, cfg.data.batch_size) == (256, 16, 256)  # Zoology's 256 setting
    datamodule.setup()
    loader = datamodule.train_dataloader()
    first_epoch = list(loader)
    loader.batch_sampler.sampler.set_epoch(1)
    second_epoch = list(loader)
    inputs, labels = first_epoch[0]["inputs"], first_epoch[0]["labels"]
    assert inputs.shape == (256, 256)
    context = 2 * cfg.data.num_kv_pairs
    queries = inputs[:, context:][labels[:, context:] != IGNORE_INDEX]
    fillers = inputs[:, context:][labels[:, context:] == IGNORE_INDEX]
    assert torch.all(fillers == 0) and torch.all(queries > 0)  # only the queried keys between the zeros
    for a, b in zip(first_epoch, second_epoch, strict=True):  # no reshuffling between epochs
        assert torch.equal(a["inputs"], b["inputs"])
    served = torch.cat([batch["inputs"] for batch in first_epoch])
    assert torch.equal(served, datamodule.datasets["train"].columns["inputs"])  # in the generated order


def test_mqar_scores_the_labelled_positions_by_index_as_a_boolean_index_would(make_config):
    """MQAR's batches carry each row's labelled positions, so the head's inputs are gathered without a device read;
    those features and labels are the boolean index's, row by row."""
    _, datamodule, task = build(make_config, "mqar/attention", *TINY_MQAR, "model.d_model=32")
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    task.eval()
    with torch.no_grad():
        features, labels = task.labelled_features(batch["inputs"], batch["labels"], batch["label_positions"])
        masked_features, masked_labels = task.labelled_features(batch["inputs"], batch["labels"])
    assert labels.shape == (256 * 16,) and torch.all(labels != IGNORE_INDEX)
    assert torch.equal(labels, masked_labels)
    torch.testing.assert_close(features, masked_features)


def test_mqar_model_is_zoologys(make_config):
    """Dropout 0.1 on the embeddings only, the identity state mixer's LN2 path, out_proj ~ N(0, 0.02 / sqrt(4))."""
    _, _, task = build(make_config, "mqar/hgrn2")
    model = task.model
    dropouts = {name: m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout) and m.p > 0}
    assert dropouts == {"backbone.input_dropout": 0.1}
    for block in model.backbone.blocks:
        assert block.mixer.out_proj.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert block.mixer.in_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)

    block = model.backbone.blocks[0].eval()
    x = torch.randn(2, 8, model.config.backbone.d_model)
    after_mixer = x + block.mixer(block.mixer_norm(x), None, None)
    ln2 = block.glu_norm  # Zoology's norm2: its output is the identity state mixer's, added in the next block
    assert isinstance(ln2, nn.LayerNorm)
    torch.testing.assert_close(block(x, None, None), after_mixer + ln2(after_mixer))


def test_mqar_lr_follows_a_per_epoch_cosine_without_warmup(make_config):
    cfg, _, task = build(make_config, "mqar/hgrn2")
    configured = task.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]
    assert schedule["interval"] == "epoch"
    epochs, peak = cfg.trainer.max_epochs, cfg.optim.lr
    for epoch in range(epochs):
        # torch's CosineAnnealingLR(T_max=epochs, eta_min=0) in closed form, as Zoology steps it after each epoch
        assert optimizer.param_groups[0]["lr"] == pytest.approx(peak * (1 + math.cos(math.pi * epoch / epochs)) / 2)
        optimizer.step()
        schedule["scheduler"].step()


def test_mqar_stops_once_validation_accuracy_exceeds_0_99_and_not_before(make_config):
    cfg = make_config("experiment=mqar/hgrn2", logger="none")
    stops = [c for c in build_callbacks(cfg, []) if isinstance(c, EarlyStopping)]
    assert len(stops) == 1 and stops[0].monitor == "val/acc"
    stop = stops[0]
    for _ in range(cfg.trainer.max_epochs - 1):  # no improvement for the whole run is no reason to stop
        assert not stop._evaluate_stopping_criteria(torch.tensor(0.5))[0]
    assert not stop._evaluate_stopping_criteria(torch.tensor(0.99))[0]  # Zoology: accuracy > threshold
    assert stop._evaluate_stopping_criteria(torch.tensor(0.9901))[0]


def test_mqar_trains_under_bf16_autocast(make_config):
    cfg = make_config("experiment=mqar/hgrn2", "trainer.accelerator=cpu", logger="none")
    assert build_trainer(cfg, [], []).precision == "bf16-mixed"


def test_fp32_evaluation_switches_the_trainers_autocast_off(make_config):
    """Zoology evaluates in fp32 what it trains under bf16 autocast; a task with fp32_evaluation does the same."""
    for fp32, dtype in ((True, torch.float32), (False, torch.bfloat16)):
        _, _, task = build(make_config, "lra/hgrn2/listops", f"+task.fp32_evaluation={str(fp32).lower()}")
        ids = torch.randint(1, 10, (2, 16))
        with torch.autocast("cpu", dtype=torch.bfloat16), task.evaluation_precision():
            assert task.model(ids).dtype == dtype


@pytest.mark.parametrize(("seq_len", "kv_pairs", "batch"), [(64, 4, 512), (128, 8, 512), (256, 16, 256), (512, 64, 64)])
def test_mqar_batch_follows_the_sequence_length_as_zoologys(seq_len, kv_pairs, batch, make_config):
    cfg, datamodule, _ = build(make_config, "mqar/hgrn2", f"data.seq_len={seq_len}", f"data.num_kv_pairs={kv_pairs}")
    assert cfg.data.batch_size == datamodule.hparams.batch_size == batch


def test_mqar_evaluates_in_fp32_what_it_trains_under_bf16(make_config):
    _, _, task = build(make_config, "mqar/hgrn2", "model.d_model=16", "model.mixer_options.expand_ratio=16")
    ids = torch.randint(1, 10, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert task.model(ids).dtype == torch.bfloat16
        with task.evaluation_precision():
            assert task.model(ids).dtype == torch.float32


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.position_encoding=rotary", r"position_encoding='rotary' is not known; choose one of"),
        ("model.glu_ratio=1", r"identity_channel_mixer=True replaces the GLU, so it needs glu_ratio=0"),
        ("model.batchnorm_group=0", r"batchnorm group_size=0 must be a positive number of sequences"),
    ],
)
def test_a_bad_knob_fails_in_one_line_naming_it(override, message, make_config):
    experiment = "mqar/hgrn2" if override.startswith("model.glu") else "lra/hgrn2/pathfinder"
    with pytest.raises((ConfigError, ValueError), match=message):
        build(make_config, experiment, override)


def test_a_schedule_that_runs_past_its_end_must_say_how():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"past_total='wrap' is not known; choose one of \('rise', 'hold'\)"):
        cosine_warmup(optimizer, total_steps=10, past_total="wrap")


def official_hgru2_1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mixer: nn.Module) -> torch.Tensor:
    """Zoology's HGRN2 mixer, restated from hgru2-pytorch's `Hgru2_1d.forward` (use_fla=True, act silu, uv_act
    sigmoid, LayerNorm, bias, no lower bound) and Zoology's wrapper (x [b, n, d] transposed to [n, b, d] and back):
    in_proj's output split as V, Q, F; lambda = sigmoid(F); log-decay log(lambda), key 1 - lambda; fla's
    fused_chunk_gla(Q, K, V, G, scale 1), here its recurrence written out token by token; the norm, out_proj.
    `weight`, `bias`: the in_proj in the official order; `mixer` lends its norm and out_proj."""
    x = x.transpose(0, 1)  # n b d
    v, q, f = F.linear(x, weight, bias).chunk(3, dim=-1)
    v, q, lam = F.silu(v), torch.sigmoid(q), torch.sigmoid(f)
    lam = torch.zeros_like(x) + (1 - torch.zeros_like(x)) * lam  # lower_bound 0 (an int) -> zeros_like(x)
    heads = [t.unflatten(-1, (-1, mixer.head_dim)).permute(1, 2, 0, 3) for t in (v, q, torch.log(lam), 1 - lam)]
    v, q, g, k = heads  # b h n e
    state = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    outputs = []
    for t in range(q.shape[2]):  # S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, o_t = scale * q_t S_t
        state = g[:, :, t, :, None].exp() * state + k[:, :, t, :, None] * v[:, :, t, None, :]
        outputs.append(1.0 * q[:, :, t, None, :] @ state)
    o = torch.cat(outputs, dim=2).permute(2, 0, 1, 3).flatten(-2)  # n b (h e)
    return mixer.out_proj(mixer.norm(o)).transpose(0, 1)


@pytest.mark.parametrize("expand_ratio", [16, 32])  # 2 heads; one head, as Zoology's min(d_model, 128) at d <= 128
def test_mqar_hgrn2_mixer_is_the_official_one_on_an_mqar_batch(expand_ratio, make_config):
    """Issue 18, part 2: our HGRN2 mixer as the MQAR experiment builds it against the official module restated from
    its source, on the embedded first rows of a real MQAR batch, with the same weights (the official in_proj orders
    its output V, Q, F; ours q, f, v): the output and the gradients of the input and of every weight, in float64."""
    overrides = ("model.d_model=32", f"model.mixer_options.expand_ratio={expand_ratio}", *TINY_MQAR)
    _, datamodule, task = build(make_config, "mqar/hgrn2", "data.seq_len=64", "data.num_kv_pairs=4", *overrides)
    datamodule.setup()
    inputs = next(iter(datamodule.train_dataloader()))["inputs"][:3]
    mixer = task.model.backbone.blocks[0].mixer.double()
    x = task.model.embed(inputs).detach().double().requires_grad_()
    q_rows, f_rows, v_rows = mixer.in_proj.weight.detach().chunk(3)
    official_weight = torch.cat([v_rows, q_rows, f_rows]).requires_grad_()
    q_bias, f_bias, v_bias = mixer.in_proj.bias.detach().chunk(3)
    official_bias = torch.cat([v_bias, q_bias, f_bias]).requires_grad_()

    ours = mixer(x, None, None)
    official = official_hgru2_1d(x, official_weight, official_bias, mixer)
    torch.testing.assert_close(ours, official, rtol=1e-10, atol=1e-12)
    weights = torch.randn(ours.shape, generator=torch.Generator().manual_seed(0), dtype=ours.dtype)
    rest = [x, mixer.norm.weight, mixer.norm.bias, mixer.out_proj.weight, mixer.out_proj.bias]
    ours_grads = torch.autograd.grad((ours * weights).sum(), [*rest, mixer.in_proj.weight, mixer.in_proj.bias])
    official_grads = torch.autograd.grad((official * weights).sum(), [*rest, official_weight, official_bias])
    for got, want in zip(ours_grads[:5], official_grads[:5], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    for got, want in zip(ours_grads[5:], official_grads[5:], strict=True):  # back to the official V, Q, F order
        q_part, f_part, v_part = got.chunk(3)
        torch.testing.assert_close(torch.cat([v_part, q_part, f_part]), want, rtol=1e-9, atol=1e-12)
