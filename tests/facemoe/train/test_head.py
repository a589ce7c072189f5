"""CosFace head: the loss by hand, partial-FC sampling keeps the batch's classes."""

from __future__ import annotations

import math

import torch

from facemoe.train.head import CosFaceHead


def test_cosface_loss_by_hand():
    head = CosFaceHead(2, 2, scale=64.0, margin=0.4)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # centres are normalised inside
    emb = torch.tensor([[3.0, 3.0]])  # cos 1/sqrt(2) to both classes
    c = 1 / math.sqrt(2)
    logits = [64 * (c - 0.4), 64 * c]  # label 0 gets the margin
    expected = -logits[0] + math.log(math.exp(logits[0]) + math.exp(logits[1]))
    assert float(head(emb, torch.tensor([0]))) == __import__("pytest").approx(expected, rel=1e-5)


def test_partial_fc_keeps_batch_classes_and_remaps_labels():
    torch.manual_seed(0)
    head = CosFaceHead(4, 10, sample_rate=0.3)
    labels = torch.tensor([7, 2, 7])
    weight, target = head._sample(labels)
    assert weight.shape == (3, 4)  # ceil(0.3 * 10)
    chosen = [int(torch.nonzero((head.weight == w).all(dim=1))) for w in weight]
    assert chosen == sorted(chosen) and {2, 7} <= set(chosen)
    assert [chosen[t] for t in target] == [7, 2, 7]
    head.eval()
    assert head._sample(labels)[0].shape == (10, 4)  # every centre outside training


def test_only_sampled_centres_get_gradients():
    torch.manual_seed(1)
    head = CosFaceHead(4, 10, sample_rate=0.3)
    head(torch.randn(3, 4), torch.tensor([1, 1, 5])).backward()
    touched = (head.weight.grad.abs().sum(dim=1) > 0).nonzero().flatten().tolist()
    assert len(touched) == 3 and {1, 5} <= set(touched)
