"""The authors' training augmentations on aligned 112x112 RGB crops, and the 112 -> 120 model input.

Each sample draws from its own ``numpy.random.Generator`` (seeded from the run seed and the sample's
position in the schedule), so augmentations do not depend on worker processes and a resumed run sees
exactly the images the uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from .config import AugmentSection

__all__ = ["INTERPOLATIONS", "Augmenter", "to_train_tensor"]

INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
_RATIO = (3 / 4, 4 / 3)
_GRAY = np.array([0.299, 0.587, 0.114], np.float32)
MODEL_SIZE = 120


@dataclass(frozen=True)
class Augmenter:
    cfg: AugmentSection

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """RGB uint8 ``[H, W, 3]`` -> (augmented RGB uint8, effective face size in px after low-res)."""
        face_px = float(img.shape[0])
        if rng.random() < self.cfg.crop_prob:
            img = self.crop_with_zero_padding(img, rng)
        if rng.random() < self.cfg.low_res_prob:
            img, ratio = self.low_resolution(img, rng)
            face_px *= ratio
        if rng.random() < self.cfg.photometric_prob:
            img = self.photometric(img, rng)
        if rng.random() < self.cfg.flip_prob:
            img = img[:, ::-1]
        return np.ascontiguousarray(img), face_px

    def crop_with_zero_padding(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Keep a random box (area ``crop_scale``, aspect 3/4..4/3) in place and zero the rest."""
        h_img, w_img = img.shape[:2]
        area = h_img * w_img
        top, left, h, w = 0, 0, h_img, w_img
        for _ in range(10):
            target = area * rng.uniform(*self.cfg.crop_scale)
            aspect = math.exp(rng.uniform(math.log(_RATIO[0]), math.log(_RATIO[1])))
            w_try = round(math.sqrt(target * aspect))
            h_try = round(math.sqrt(target / aspect))
            if 0 < w_try <= w_img and 0 < h_try <= h_img:
                h, w = h_try, w_try
                top = int(rng.integers(0, h_img - h + 1))
                left = int(rng.integers(0, w_img - w + 1))
                break
        out = np.zeros_like(img)
        out[top : top + h, left : left + w] = img[top : top + h, left : left + w]
        return out

    def low_resolution(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Down-sample to a random side ratio and back, each way with a random interpolation."""
        h, w = img.shape[:2]
        ratio = float(rng.uniform(*self.cfg.low_res_scale))
        side = max(1, int(ratio * h))
        down = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
        up = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
        small = cv2.resize(img, (side, side), interpolation=down)
        return cv2.resize(small, (w, h), interpolation=up), side / h

    def photometric(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast and saturation factors from [1-j, 1+j], applied in a random order."""
        j = self.cfg.jitter
        x = img.astype(np.float32)
        for op in rng.permutation(3):
            factor = float(rng.uniform(1 - j, 1 + j))
            gray = x @ _GRAY
            if op == 0:
                x = x * factor
            elif op == 1:
                x = gray.mean() + factor * (x - gray.mean())
            else:
                x = gray[..., None] + factor * (x - gray[..., None])
            x = np.clip(x, 0, 255)
        return x.round().astype(np.uint8)


def to_train_tensor(img: np.ndarray) -> torch.Tensor:
    """RGB uint8 112x112 -> ``[3, 120, 120]`` float in [-1, 1]: PIL bilinear resize as the authors' training."""
    resized = np.asarray(Image.fromarray(img).resize((MODEL_SIZE, MODEL_SIZE), Image.BILINEAR))
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
