"""Heads and the registry: generation equals the parallel forward, pooling ignores padding, named sizes build."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import pytest
import timm
import torch
from omegaconf import OmegaConf
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters

from hgrn.config import compose
from hgrn.eval.generation import generate
from hgrn.models import (
    Backbone,
    BackboneConfig,
    CausalLM,
    CausalLMConfig,
    SequenceClassifier,
    SequenceClassifierConfig,
    build_model,
    create_model,
    list_models,
    model_config,
)
from hgrn.models.backbone import as_backbone_config
from hgrn.training.config_check import check_model
from tests.helpers import assert_close

FAMILIES = {
    "hgrn1": {},
    "hgrn2": {"expand_ratio": 4},
    "gla": {"num_heads": 2},
    "attention": {"num_heads": 2},
}


def tiny_backbone(mixer: str, **overrides) -> BackboneConfig:
    options = {"d_model": 16, "n_layers": 3, "mixer": mixer, "mixer_options": FAMILIES[mixer], **overrides}
    return BackboneConfig(**options)


@pytest.mark.parametrize("mixer", FAMILIES)
def test_lm_generation_token_by_token_equals_parallel_logits(mixer):
    torch.manual_seed(0)
    model = CausalLM(CausalLMConfig(tiny_backbone(mixer), vocab_size=50)).double().eval()
    tokens = torch.randint(0, 50, (2, 13))
    logits = model(tokens)
    states = model.backbone.initial_state(2)
    stepped = []
    for t in range(tokens.shape[1]):
        step_logits, states = model.step(tokens[:, t], states)
        stepped.append(step_logits)
    assert_close("logits", torch.stack(stepped, 1), logits, 1e-10)
    # Greedy generation continues with the argmax of the full forward at every length.
    generated = torch.cat([tokens[:, :5], generate(model, tokens[:, :5], max_new_tokens=6)], 1)
    for t in range(5, generated.shape[1]):
        assert torch.equal(generated[:, t], model(generated[:, :t])[:, -1].argmax(-1))


# per layer at d 16: HGRN1 2 d (complex), HGRN2 d x expand_ratio, GLA heads x d_k x d_v (expand_k 0.5, expand_v 1),
# attention 2 d a token (keys and values)
STATE_PER_LAYER = {"hgrn1": 2 * 16, "hgrn2": 16 * 4, "gla": 2 * 4 * 8, "attention": lambda tokens: 2 * 16 * tokens}


@pytest.mark.parametrize("mixer", FAMILIES)
def test_state_numel_counts_what_decoding_carries(mixer):
    backbone = Backbone(tiny_backbone(mixer))
    states, x = backbone.initial_state(1), torch.randn(1, 16)
    for _ in range(7):
        _, states = backbone.step(x, states)
    carried = sum(t.numel() for layer in states for t in (layer if isinstance(layer, tuple) else (layer,)))
    per_layer = STATE_PER_LAYER[mixer]
    expected = 3 * (per_layer(7) if callable(per_layer) else per_layer)
    assert backbone.state_numel(7) == carried == expected
    with pytest.raises(ValueError, match="causal backbone"):
        Backbone(tiny_backbone(mixer, direction="bidirectional")).state_numel(7)


def replayed_like_a_cuda_graph(forward, pool: dict):
    """forward as a CUDA-graph replay without autograd: its output lives in one memory pool that the next replay
    reuses (poisons) before it reads its input, as torch's graph trees do for separately compiled blocks."""

    def replay(x, *rest):
        if "out" in pool:
            pool["out"].fill_(float("nan"))
        out = forward(x, *rest)
        pool.setdefault("out", torch.empty_like(out)).copy_(out)
        return pool["out"]

    return replay


def test_graph_replayed_blocks_pass_on_copies_outside_autograd():
    """Backbone.compile_blocks(mode="reduce-overhead") makes the forward copy each block's output out of the graph
    pool under no_grad, so validation reads no overwritten tensor; without the copy the same replays give NaN."""
    torch.manual_seed(0)
    backbone = BackboneConfig(d_model=16, n_layers=3, mixer="hgrn2", mixer_options={"expand_ratio": 4})
    model = CausalLM(CausalLMConfig(backbone, vocab_size=50)).eval()
    tokens = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        eager = model(tokens)
    pool: dict = {}
    for part in (*model.backbone.blocks, model.backbone.norm):
        part.forward = replayed_like_a_cuda_graph(part.forward, pool)
    model.backbone.replays_graphs = True
    with torch.no_grad():
        assert torch.equal(model(tokens), eager)
    model.backbone.replays_graphs = False
    with torch.no_grad():
        assert model(tokens).isnan().all()
    model.compile_blocks(whole=True, mode="reduce-overhead")
    assert model.backbone.replays_graphs


@pytest.mark.parametrize("whole", [False, True])
def test_compile_blocks_captures_the_torch_nn_built_ins(whole, monkeypatch):
    """Module.compile of a torch.nn built-in (nn.LayerNorm, nn.Embedding) captured no frame before pytorch#185722 (the
    GPU machine's torch 2.11: an MQAR step's embedding and final norm ran eagerly); here that behaviour is restored
    and compile_blocks must still compile the embedding and every norm, block by block or within whole blocks."""
    if hasattr(OptimizedModule, "_should_wrap_module_call_impl"):  # the fix; absent from the torch versions before it
        monkeypatch.setattr(OptimizedModule, "_should_wrap_module_call_impl", staticmethod(lambda fn: False))

    def graphs(module: torch.nn.Module, *args: torch.Tensor) -> int:
        torch._dynamo.reset()
        counters.clear()
        module(*args)
        return counters["stats"]["unique_graphs"]

    x = torch.randn(2, 5, 16)
    plain = torch.nn.LayerNorm(16)
    plain.compile()
    assert graphs(plain, x) == 0  # what compile_blocks works around
    model = CausalLM(CausalLMConfig(tiny_backbone("hgrn2", norm="layernorm", glu_ratio=0), vocab_size=30))
    model.compile_blocks(whole)
    assert graphs(model.embed, torch.tensor([[1, 2, 3]])) == 1
    assert graphs(model.backbone.norm, x) == 1
    if not whole:  # 'parts': each block's norms alone
        assert graphs(model.backbone.blocks[0].mixer_norm, x) == 1


def test_lm_ties_embeddings_and_is_causal():
    model = CausalLM(CausalLMConfig(tiny_backbone("hgrn2"), vocab_size=30))
    assert model.lm_head.weight is model.embed.weight
    with pytest.raises(ValueError, match="direction='causal'"):
        CausalLMConfig(tiny_backbone("hgrn2", direction="bidirectional"), vocab_size=30)


@pytest.mark.parametrize("pooling", ["mean", "last", "first"])
def test_classifier_pooling_ignores_padding(pooling):
    torch.manual_seed(0)
    config = SequenceClassifierConfig(
        tiny_backbone("hgrn2", direction="bidirectional"), num_classes=3, vocab_size=20, max_length=32, pooling=pooling
    )
    model = SequenceClassifier(config).double().eval()
    tokens = torch.randint(1, 20, (2, 9))
    logits = model(tokens, torch.ones(2, 9, dtype=torch.bool))
    padded = torch.cat((tokens, torch.zeros(2, 4, dtype=torch.long)), 1)
    mask = torch.cat((torch.ones(2, 9, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)), 1)
    assert_close("padded", model(padded, mask), logits, 1e-12)


def test_pair_classifier_uses_both_documents():
    torch.manual_seed(0)
    config = SequenceClassifierConfig(tiny_backbone("hgrn2", direction="bidirectional"), 2, vocab_size=20, pair=True)
    model = SequenceClassifier(config).eval()
    a, b, c = torch.randint(1, 20, (3, 2, 7))
    assert model(a, inputs2=b).shape == (2, 2)
    assert not torch.allclose(model(a, inputs2=b), model(a, inputs2=c))
    with pytest.raises(ValueError, match="inputs2"):
        model(a)


@pytest.mark.parametrize("direction", ["2d", "2d_series"])
def test_classifier_on_continuous_inputs_with_2d_scan(direction):
    config = SequenceClassifierConfig(
        tiny_backbone("hgrn2", direction=direction, grid=(4, 4)), num_classes=10, input_dim=1, max_length=16
    )
    assert SequenceClassifier(config)(torch.randn(3, 16, 1)).shape == (3, 10)
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceClassifierConfig(tiny_backbone("hgrn2"), 10, vocab_size=5, input_dim=1)


@pytest.mark.parametrize("name", ["hgrn1_vit_tiny", "hgrn2_vit_tiny"])
def test_image_models_build_through_timm(name):
    model = timm.create_model(name, num_classes=7, img_size=56, drop_path_rate=0.1)
    assert model(torch.randn(2, 3, 56, 56)).shape == (2, 7)
    assert model.pretrained_cfg["input_size"] == (3, 56, 56)
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model(name, pretrained=True)


@pytest.mark.parametrize(("name", "paper_millions"), [("hgrn1-vit-tiny", 6.1), ("hgrn1-vit-small", 23.7)])
def test_hgrn1_image_models_match_the_paper_parameter_counts(name, paper_millions):
    params = sum(p.numel() for p in create_model(name).parameters()) / 1e6
    assert abs(params - paper_millions) / paper_millions < 0.01


def test_registry_overrides_and_errors():
    assert {"hgrn2-lm-base", "hgrn2-vit-tiny", "attention-lm-base"} <= set(list_models())
    config = model_config(
        "hgrn2-lm-base", vocab_size=100, backbone={"n_layers": 2, "mixer_options": {"expand_ratio": 8}}
    )
    assert config.backbone.n_layers == 2 and config.backbone.mixer_options == {
        "expand_ratio": 8,
        "norm": "simple_rmsnorm",
    }
    assert create_model("hgrn2-lm-base", vocab_size=100, backbone={"n_layers": 1})(
        torch.zeros(1, 3, dtype=int)
    ).shape == (
        1,
        3,
        100,
    )
    with pytest.raises(ValueError, match="not registered"):
        create_model("hgrn3-lm-base")
    with pytest.raises(ValueError, match=r"unknown overrides \['layers'\]"):
        model_config("hgrn2-lm-base", layers=3)
    with pytest.raises(ValueError, match=r"backbone has unknown keys \['depth'\]"):
        model_config("hgrn2-lm-base", backbone={"depth": 3})


def test_import_hgrn_is_enough_for_timm():
    code = "import timm, hgrn; print(sorted(n for n in timm.list_models('hgrn*')))"
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert listed.strip() == str(["hgrn1_vit_small", "hgrn1_vit_tiny", "hgrn2_vit_small", "hgrn2_vit_tiny"])


@pytest.mark.parametrize("name", list_models())
def test_named_model_is_the_hydra_model_of_the_same_name(name, tmp_path):
    """One definition: `model=<kind>/<family>-<size>` composes to the backbone `create_model(name)` builds."""
    family, kind, size = name.split("-", 2)
    cfg = compose(f"model={kind}/{family}-{size}", f"paths.output_dir={tmp_path}")
    check_model(cfg.model)
    hydra_backbone = asdict(as_backbone_config(OmegaConf.to_container(cfg.model)))
    assert hydra_backbone == {**asdict(model_config(name).backbone), "grid": None}  # an image head fills the grid


@pytest.mark.parametrize(
    ("name", "millions"),
    [("hgrn1-lm-150m", 146.11), ("hgrn2-lm-370m", 359.83), ("hgrn2-lm-1b", 1027.91)],
)
def test_pile_sizes_have_their_parameter_counts(name, millions):
    """The README's counts (tied embeddings, GPT-2 vocabulary), built on the meta device."""
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(model_config(name)).parameters()) / 1e6
    assert params == pytest.approx(millions, abs=0.05)
