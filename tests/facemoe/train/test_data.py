"""Training datasets: identity folders and RecordIO, bad input, the resumable distributed batch order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facemoe.train.config import AugmentSection, DataSection
from facemoe.train.data import FolderSource, RecordSource, StepBatchSampler, TrainDataset, open_source
from facemoe.train.errors import DatasetError
from tests.facemoe.train.conftest import IDENTITIES, PER_IDENTITY, make_identity_folder


def test_folder_and_record_sources_agree(identity_folder, record_file):
    folder = open_source(DataSection(path=str(identity_folder)))
    rec = open_source(DataSection(path=str(record_file)))
    assert isinstance(folder, FolderSource) and isinstance(rec, RecordSource)
    assert len(folder) == len(rec) == IDENTITIES * PER_IDENTITY
    assert folder.num_classes == rec.num_classes == IDENTITIES
    img_f, lab_f = folder.load(9)
    img_r, lab_r = rec.load(9)
    assert lab_f == lab_r == 1 and img_f.shape == img_r.shape == (112, 112, 3)
    assert np.array_equal(img_f, img_r)  # the same PNG bytes


@pytest.mark.parametrize("identities", [0, 1])
def test_too_few_identities(tmp_path, identities):
    root = tmp_path / "one"
    root.mkdir()
    if identities:
        make_identity_folder(root / "x", identities=1, per_identity=3)
        root = root / "x"
    with pytest.raises(DatasetError, match=f"expected at least 2 identities .*got {identities}"):
        FolderSource(root)


def test_image_of_the_wrong_size(tmp_path):
    root = make_identity_folder(tmp_path / "d", identities=2, per_identity=2)
    cv2.imwrite(str(root / "person_1" / "big.png"), np.zeros((128, 96, 3), np.uint8))
    with pytest.raises(
        DatasetError, match=r"expected aligned 112x112 crops, got 1 other image\(s\): .*big.png \(96x128\)"
    ):
        FolderSource(root)
    # without the up-front check the image is refused when it is read
    source = FolderSource(root, check_sizes=False)
    with pytest.raises(DatasetError, match="got 96x128"):
        source.load(source.paths.index(root / "person_1" / "big.png"))


def test_missing_dataset(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        open_source(DataSection(path=str(tmp_path / "nope")))
    with pytest.raises(DatasetError, match="needs its .idx"):
        open_source(DataSection(path=str(tmp_path / "nope.rec")))


def test_dataset_items_are_a_function_of_position(identity_folder):
    ds = TrainDataset(FolderSource(identity_folder), AugmentSection(crop_prob=1, low_res_prob=1), seed=3)
    a, la, pa = ds[37]
    b, lb, pb = ds[37]
    assert torch.equal(a, b) and la == lb == (37 % 32) // PER_IDENTITY and pa == pb
    assert a.shape == (3, 120, 120) and -1.0 <= a.min() and a.max() <= 1.0
    assert pa < 112  # low-resolution always applied here
    assert not torch.equal(ds[5][0], ds[5 + 32][0])  # the same image in the next epoch is augmented anew


def test_sampler_ranks_are_disjoint_and_resume_continues():
    full = [list(StepBatchSampler(20, 4, world=2, rank=r, seed=1, total=6)) for r in range(2)]
    for r in range(2):
        assert all(len(b) == 4 for b in full[r])
    epoch0 = [p for r in range(2) for b in full[r][:2] for p in b]  # 2 micro-batches per epoch per rank
    assert len(set(epoch0)) == 16 and all(p < 20 for p in epoch0)
    assert min(p for b in full[0][2:4] for p in b) >= 20  # epoch 1 positions
    resumed = list(StepBatchSampler(20, 4, world=2, rank=1, seed=1, total=6, start=3))
    assert resumed == full[1][3:]


def test_sampler_needs_one_batch():
    with pytest.raises(DatasetError, match="expected at least batch_size x processes = 16 images, got 10"):
        StepBatchSampler(10, 8, world=2, rank=0, seed=0, total=1)
