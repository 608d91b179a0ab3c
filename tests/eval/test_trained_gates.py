"""The trained-gates benchmark (hgrn.bench.trained_gates): the gates it captures are the ones the model's recurrence
gets, its hooks are gone afterwards, and it runs end to end on a checkpoint written by training (CPU: reference ops,
timed by the wall clock)."""

from __future__ import annotations

import json

import pytest
import torch

from hgrn import ops
from hgrn.bench import trained_gates
from hgrn.layers import HGRN2Mixer


def test_the_captured_gates_are_what_each_mixer_scans(loaded_lm, monkeypatch):
    model = loaded_lm.model
    tokens = torch.randint(0, 1000, (2, 12))
    scanned = []
    recurrence = ops.hgrn2_recurrence

    def hgrn2_recurrence(q, v, f_logits, lower_bound=None, **options):  # the dispatch finds backends by this name
        scanned.append((f_logits, lower_bound))
        return recurrence(q, v, f_logits, lower_bound, **options)

    monkeypatch.setattr(ops, "hgrn2_recurrence", hgrn2_recurrence)
    gates = trained_gates.capture_gates(model, tokens)
    mixers = [m for m in model.modules() if isinstance(m, HGRN2Mixer)]
    assert len(gates) == len(scanned) == len(mixers) == 2
    for (z, bound), (z_seen, bound_seen), mixer in zip(gates, scanned, mixers, strict=True):
        assert z.shape == (2, 12, mixer.num_heads, mixer.head_dim)
        torch.testing.assert_close(z, z_seen, rtol=0, atol=0)
        torch.testing.assert_close(bound, bound_seen, rtol=0, atol=0)
        assert not mixer._forward_hooks


def test_a_model_without_hgrn2_mixers_is_refused():
    with pytest.raises(ValueError, match="no HGRN2 mixer"):
        trained_gates.capture_gates(torch.nn.Linear(2, 2), torch.zeros(1, 2))


def test_the_benchmark_runs_on_a_checkpoint(lm_checkpoint, tmp_path):
    trained_gates.main([str(lm_checkpoint), "--batch", "2", "--length", "32", "--out", str(tmp_path)])
    [written] = list(tmp_path.glob("trained-gates-*.json"))
    result = json.loads(written.read_text())
    assert [row["layer"] for row in result["rows"]] == [0, 1]
    for row in result["rows"]:
        assert row["shape"] == [2, 32, 4, 8]
        for gates in (row["trained"], row["random"]):
            assert gates["fwd_ms"] > 0 and gates["fwd_bwd_ms"] > 0 and gates["mean_log_f"] < 0
            assert gates["chunk"] == 32 and 0 <= gates["steep_share"] <= 1
    assert "| 0 | 2 x 32 x 4 x 8 |" in written.with_suffix(".md").read_text()


def test_the_steep_share_counts_chunk_heads_with_some_channel_past_the_fast_paths_range():
    """Chunks of 4 steps: a channel at log f -40 per step (-160 over a chunk) makes its (chunk, head) steep, one at
    -30 (-120) does not; a partial last chunk counts over its own steps."""
    log_f = torch.full((1, 10, 2, 3), -1.0)  # chunks: steps 0-3, 4-7, 8-9 (two steps)
    log_f[0, 0:4, 0, 2] = -40.0  # chunk 0, head 0: steep
    log_f[0, 4:8, 1, 0] = -30.0  # chunk 1, head 1: -120, fast
    log_f[0, 8:10, 1, 1] = -70.0  # chunk 2 (partial), head 1: -140, steep
    assert trained_gates.steep_share(log_f, 4) == pytest.approx(2 / 6)
    log_f[0, 8:10, 1, 1] = -60.0  # -120
    assert trained_gates.steep_share(log_f, 4) == pytest.approx(1 / 6)
