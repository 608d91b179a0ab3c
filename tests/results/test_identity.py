"""Which overrides keep a run on its recipe, which make it a point of a sweep, and how W&B groups and tags it."""

from __future__ import annotations

import pytest

from hgrn.results.identity import (
    deviations,
    follows_recipe,
    override_key,
    shown_overrides,
    tuned,
    wandb_group,
    wandb_tags,
)


@pytest.mark.parametrize(
    "override",
    [
        "experiment=lra/hgrn2/listops",
        "seed=3",
        "trainer.devices=8",
        "trainer.num_nodes=2",
        "trainer=ddp",
        "trainer=fsdp",
        "logger=csv",
        "logger.wandb.project=mine",
        "paths.output_dir=/tmp/x",
        "hydra.run.dir=/tmp/x",
        "data.num_workers=6",
        "data.data_dir=/data/lra/listops",
        "resume=auto",
        "~callbacks.progress",
        "~callbacks.progress=null",
        "callbacks.step.every_n_train_steps=100",
        "trainer.max_time=00:00:08:45",  # cuts a run short at most, and then it is recorded as not finished
        "task.compile=blocks",
    ],
)
def test_neutral_overrides_keep_the_recipe(override):
    assert follows_recipe([override]) and deviations([override]) == ()


@pytest.mark.parametrize(
    "override",
    [
        "model.d_model=32",
        "model.n_layers=1",
        "data.batch_size=64",
        "data.max_length=512",
        "trainer.max_epochs=1",
        "trainer.max_steps=5",
        "trainer.limit_train_batches=8",
        "trainer.fast_dev_run=true",
        "trainer.precision=32-true",
        "trainer.val_check_interval=250",
        "trainer=cpu",
        "task.label_smoothing=0.1",
        "+callbacks.stop={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/acc}",
        "callbacks.guard.mode=skip",
        "name=lra/hgrn2/listops",
        "ckpt_path=/tmp/other.ckpt",
        "+model.mixer_options.extra=1",
        "++data.seq_len=64",
    ],
)
def test_overrides_that_change_the_model_data_or_budget_deviate(override):
    assert not follows_recipe(["experiment=lra/hgrn2/listops", override])
    assert deviations(["experiment=lra/hgrn2/listops", override]) == (override,)


def test_optimiser_settings_are_a_sweep_not_a_deviation():
    overrides = ["experiment=mqar/hgrn2", "sched.warmup_steps=10", "optim.lr=1e-3", "seed=1"]
    assert follows_recipe(overrides)
    assert tuned(overrides) == ("optim.lr=1e-3", "sched.warmup_steps=10")
    assert shown_overrides(overrides) == ("sched.warmup_steps=10", "optim.lr=1e-3")


def test_unrecorded_overrides_are_not_known_to_follow_the_recipe():
    assert not follows_recipe(None)


def test_a_table_can_accept_more_keys():
    overrides = ["experiment=lm/wikitext103/hgrn2", "model.mixer_options.expand_ratio=8"]
    assert not follows_recipe(overrides)
    assert follows_recipe(overrides, allowed=("model.mixer_options.expand_ratio",))


def test_override_syntax():
    assert override_key("+model.grid=[32,32]") == ("model.grid", "[32,32]")
    assert override_key("~callbacks.progress") == ("callbacks.progress", None)
    assert override_key("data@foo=bar") == ("data", "bar")
    with pytest.raises(ValueError, match="not a Hydra override"):
        override_key("=3")


def test_a_sweep_is_one_wandb_group_and_tags_say_what_changed():
    assert wandb_group("mqar/hgrn2", None) == "mqar/hgrn2"
    assert wandb_group("mqar/hgrn2", "outputs/mqar/hgrn2/multirun_2026-12-02_10-00-00") == (
        "mqar/hgrn2/multirun_2026-12-02_10-00-00"
    )
    tags = wandb_tags("mqar/hgrn2", ["experiment=mqar/hgrn2", "seed=3", "optim.lr=1e-3", "logger=wandb"])
    assert tags == ["mqar/hgrn2", "recipe", "seed=3", "optim.lr=1e-3"]
    assert wandb_tags("demo", None) == ["demo", "deviates"]
    long = "model.mixer_options.q_act=" + "x" * 80
    assert all(len(tag) <= 64 for tag in wandb_tags("demo", [long]))
