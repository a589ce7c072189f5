"""Metrics against values computed by hand (the working is in each test's comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facemoe.evaluate import metrics as m

T, F = True, False


def test_verification_accuracy_two_folds_by_hand():
    # fold 0 = pairs 0-4, trained on 5-9: best threshold 0.325 (4/5; 1.65 also gives 4/5, the lower wins);
    #   on fold 0 it accepts all four genuine and the 0.4 impostor -> 4/5.
    # fold 1 = pairs 5-9, trained on 0-4: threshold 0.5 separates them; on fold 1 the 0.65 impostor is
    #   accepted and the 0.35 genuine rejected -> 3/5.
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1, 0.65, 0.35]
    labels = [T, T, T, T, F, F, F, F, F, T]
    res = m.verification_accuracy(scores, labels, folds=2)
    assert res.fold_accuracy == pytest.approx((0.8, 0.6))
    assert res.fold_threshold == pytest.approx((0.325, 0.5))
    assert res.mean == pytest.approx(0.7)
    assert res.std == pytest.approx(0.1)


def test_verification_accuracy_all_genuine_is_perfect():
    res = m.verification_accuracy(np.linspace(0.2, 0.7, 10), [T] * 10, folds=10)
    assert res.mean == 1.0 and res.std == 0.0


@pytest.mark.parametrize(
    "scores, labels, folds, match",
    [
        ([0.1, 0.2], [T, F], 10, "at least 10 pairs"),
        ([0.1, 0.2, 0.3], [T, F], 2, "same length"),
        ([0.1, float("nan"), 0.3], [T, F, T], 2, "finite"),
        ([0.1, 0.2, 0.3], [T, F, T], 1, "at least 2"),
    ],
)
def test_verification_accuracy_bad_input(scores, labels, folds, match):
    with pytest.raises(ValueError, match=match):
        m.verification_accuracy(scores, labels, folds=folds)


def test_roc_curve_with_a_tie_by_hand():
    # sorted: 0.9 G | 0.8 I, 0.8 G (one point for the tie) | 0.5 I | 0.3 G; 3 genuine, 2 impostor
    far, tar, thr = m.roc_curve([0.9, 0.8, 0.8, 0.5, 0.3], [T, F, T, F, T])
    np.testing.assert_allclose(far, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(tar, [0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.5, 0.3])


def test_roc_needs_both_kinds():
    with pytest.raises(ValueError, match="0 impostor"):
        m.roc_curve([0.5, 0.6], [T, T])


def test_tar_at_far_by_hand():
    genuine = [0.9, 0.8, 0.7, 0.2]
    impostor = [0.85, 0.6, 0.5, 0.4, 0.3, 0.1, 0.05, 0.0, -0.1, -0.2]
    res = m.tar_at_far(genuine + impostor, [T] * 4 + [F] * 10, [0.01, 0.1, 0.3])
    # FAR 0.1 of 10 impostors: one may pass -> threshold 0.6 (only 0.85 is above) -> 3 of 4 genuine
    assert res[0.1] == {"tar": 0.75, "threshold": 0.6, "far_achieved": 0.1, "resolvable": True}
    # FAR 0.3: three may pass -> threshold 0.4 -> genuine above 0.4: 3 of 4
    assert (
        res[0.3]["threshold"] == 0.4
        and res[0.3]["tar"] == 0.75
        and res[0.3]["far_achieved"] == pytest.approx(0.3)
    )
    # FAR 0.01 is below one impostor: threshold is the top impostor 0.85 -> 1 of 4, flagged
    assert res[0.01] == {"tar": 0.25, "threshold": 0.85, "far_achieved": 0.0, "resolvable": False}


def test_cmc_ranks_by_hand():
    sim = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # mate a first -> rank 1
            [0.5, 0.4, 0.6, 0.1],  # mate b behind 0.5 and 0.6 -> rank 3
            [0.2, 0.2, 0.2, 0.9],  # mate c tied with two others, behind 0.9 -> rank 2 (ties optimistic)
        ]
    )
    gallery = ["a", "b", "c", "d"]
    np.testing.assert_array_equal(m.mate_ranks(sim, ["a", "b", "c"], gallery), [1, 3, 2])
    res = m.cmc(sim, ["a", "b", "c"], gallery, ranks=(1, 2, 3))
    assert res == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})


def test_cmc_rejects_a_probe_without_mate():
    with pytest.raises(ValueError, match="1 of 2 probes"):
        m.cmc(np.zeros((2, 2)), ["a", "z"], ["a", "b"])


@pytest.mark.parametrize("probes", [0, 1])
def test_cmc_empty_or_single(probes):
    sim = np.full((probes, 2), 0.5)
    if probes == 0:
        with pytest.raises(ValueError, match="at least one probe"):
            m.cmc(sim, [], ["a", "b"])
    else:
        assert m.cmc(sim, ["b"], ["a", "b"], ranks=(1,)) == {1: 1.0}


def test_tpir_at_fpir_by_hand():
    # gallery a, b; mated probes a (mate 0.45, rank 1), b (mate 0.6, rank 2); non-mated tops 0.5, 0.3
    sim = np.array([[0.45, 0.1], [0.7, 0.6], [0.5, 0.2], [0.3, 0.1]])
    labels = ["a", "b", "x", "y"]
    res = m.tpir_at_fpir(sim, labels, ["a", "b"], [0.1, 0.5])
    # FPIR 0.5: one of two non-mated may pass -> threshold 0.3 -> only probe a (rank 1, 0.45 > 0.3)
    assert res[0.5] == {"tpir": 0.5, "threshold": 0.3, "fpir_achieved": 0.5, "resolvable": True}
    # FPIR 0.1: none may pass -> threshold 0.5 -> probe a's 0.45 is rejected
    assert res[0.1] == {"tpir": 0.0, "threshold": 0.5, "fpir_achieved": 0.0, "resolvable": False}
    # at rank 2, probe b counts too at FPIR 0.5
    assert m.tpir_at_fpir(sim, labels, ["a", "b"], [0.5], rank=2)[0.5]["tpir"] == 1.0


def test_tpir_needs_non_mated_probes():
    with pytest.raises(ValueError, match="0 non-mated"):
        m.tpir_at_fpir(np.eye(2), ["a", "b"], ["a", "b"], [0.1])


def test_fuse_templates_by_hand():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    ids, fused = m.fuse_templates([e1, e2, e1], [3.0, 1.0, 2.0], ["z", "z", "a"], "pre_norm_vector_add")
    assert list(ids) == ["z", "a"]  # first-seen order, not sorted
    np.testing.assert_allclose(fused, [[3 / math.sqrt(10), 1 / math.sqrt(10)], [1, 0]], rtol=1e-6)
    _, fused = m.fuse_templates([e1, e2, e1], [3.0, 1.0, 2.0], ["z", "z", "a"], "average")
    np.testing.assert_allclose(fused[0], [1 / math.sqrt(2), 1 / math.sqrt(2)], rtol=1e-6)


def test_pre_norm_vector_add_equals_mean_of_raw_embeddings():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(5, 8))
    norms = np.linalg.norm(raw, axis=1)
    _, fused = m.fuse_templates(raw / norms[:, None], norms, [7] * 5)
    mean = raw.mean(axis=0)
    np.testing.assert_allclose(fused[0], mean / np.linalg.norm(mean), rtol=1e-6)


def test_fuse_templates_bad_method():
    with pytest.raises(ValueError, match="must be one of"):
        m.fuse_templates([[1.0]], [1.0], [0], "max")
