"""SequenceBatchNorm normalises the [B * T, D] view: the statistics, running statistics, output and gradients of
BatchNorm1d over the [B, D, T] transposition (the layout LRA's code feeds it), in training and in evaluation."""

from __future__ import annotations

import copy

import torch

from hgrn.layers.norms import SequenceBatchNorm


def test_sequence_batch_norm_is_batchnorm1d_over_batch_and_time():
    torch.manual_seed(0)
    norm = SequenceBatchNorm(5)
    with torch.no_grad():
        norm.norm.weight.uniform_(0.5, 2.0)
        norm.norm.bias.uniform_(-1.0, 1.0)
    reference = copy.deepcopy(norm.norm)
    x = (torch.randn(3, 7, 5, dtype=torch.float64) * 4 + 2).requires_grad_()
    norm, reference = norm.double(), reference.double()
    for training in (True, False):
        norm.train(training), reference.train(training)
        out = norm(x)
        expected = reference(x.transpose(1, 2)).transpose(1, 2)
        torch.testing.assert_close(out, expected)
        weights = torch.randn_like(out)
        got = torch.autograd.grad((out * weights).sum(), [x, norm.norm.weight, norm.norm.bias])
        want = torch.autograd.grad((expected * weights).sum(), [x, reference.weight, reference.bias])
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
        torch.testing.assert_close(norm.norm.running_mean, reference.running_mean)
        torch.testing.assert_close(norm.norm.running_var, reference.running_var)
