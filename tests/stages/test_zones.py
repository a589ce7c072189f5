"""Zones and privacy masks: polygons as fractions of the frame rasterised per size, black-out, zones a track
entered (from its boxes, or frame by frame while tracked), and the config's refusals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from core.types import Detections
from stages.track import TrackEnd
from stages.zones import ZoneConfig, Zones, ZoneVisits, black_out, points_in_polygon, rasterise

SQUARE = ((0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75))
TRIANGLE = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0))  # the top-left half of the frame


def zone(name="door", points=SQUARE, mask=False) -> ZoneConfig:
    return ZoneConfig(name=name, points=points, mask=mask)


@pytest.mark.parametrize(("height", "width"), [(8, 8), (360, 640), (720, 1280), (37, 91)])
def test_a_square_covers_the_same_fraction_of_any_frame(height, width):
    mask = Zones([zone(mask=True)]).mask(height, width)
    assert mask.shape == (height, width) and mask.dtype == bool
    ys, xs = np.nonzero(mask)
    # pixel centres inside [W/4, 3W/4] x [H/4, 3H/4]
    assert xs.min() == int(np.ceil(width / 4 - 0.5)) and xs.max() == int(np.floor(3 * width / 4 - 0.5))
    assert ys.min() == int(np.ceil(height / 4 - 0.5)) and ys.max() == int(np.floor(3 * height / 4 - 0.5))
    assert mask.sum() == (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)


def test_rasterised_mask_agrees_with_the_point_test_away_from_edges():
    rng = np.random.default_rng(7)
    height, width = 120, 200
    for _ in range(20):
        poly = rng.uniform(0, 1, (rng.integers(3, 12), 2))
        mask = rasterise([poly], height, width)
        yy, xx = np.mgrid[0:height, 0:width]
        centres = np.stack([(xx.ravel() + 0.5) / width, (yy.ravel() + 0.5) / height], axis=1)
        inside = points_in_polygon(centres, poly).reshape(height, width)
        disagree = np.argwhere(mask != inside)
        for y, x in disagree:  # only pixels whose centre is within a pixel of an edge may differ
            px = np.array([(x + 0.5) / width, (y + 0.5) / height])
            assert _distance_to_edges(px * [width, height], poly * [width, height]) <= 1.0
        assert len(disagree) <= 0.02 * height * width


def _distance_to_edges(p, poly) -> float:
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a
    t = np.clip(((p - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
    return float(np.min(np.linalg.norm(a + t[:, None] * ab - p, axis=1)))


def test_mask_is_the_union_of_masked_zones_only_and_cached_per_size():
    zones = Zones(
        [zone("left", ((0, 0), (0.5, 0), (0.5, 1), (0, 1)), True), zone("all", ((0, 0), (1, 0), (1, 1)))]
    )
    mask = zones.mask(10, 20)
    assert mask[:, :10].all() and not mask[:, 10:].any()  # the unmasked zone "all" blacks nothing out
    assert zones.mask(10, 20) is mask
    assert zones.mask(20, 40).shape == (20, 40)
    assert Zones([zone()]).mask(10, 10) is None and not Zones([zone()]).masking


def test_apply_blacks_out_masked_pixels_in_place_and_leaves_the_rest():
    rng = np.random.default_rng(3)
    image = rng.integers(1, 256, (60, 80, 3), dtype=np.uint8)
    before = image.copy()
    out = Zones([zone(points=TRIANGLE, mask=True)]).apply(image)
    assert out is image
    mask = rasterise([np.asarray(TRIANGLE)], 60, 80)
    assert (out[mask] == 0).all() and mask.sum() > 0.4 * mask.size
    assert np.array_equal(out[~mask], before[~mask])


def test_apply_copies_a_read_only_frame_and_no_mask_returns_it_as_is():
    image = np.full((10, 10, 3), 200, np.uint8)
    image.flags.writeable = False
    out = Zones([zone(mask=True)]).apply(image)
    assert out is not image and out[5, 5].tolist() == [0, 0, 0] and image[5, 5].tolist() == [200, 200, 200]
    assert Zones([zone()]).apply(image) is image
    assert Zones().apply(image) is image


def test_clip_filter_masks_each_frame():
    filt = Zones([zone(mask=True)]).clip_filter()
    frame = np.full((40, 40, 3), 255, np.uint8)
    out = filt(frame, 1.5)
    assert out[20, 20].tolist() == [0, 0, 0] and out[2, 2].tolist() == [255, 255, 255]


def test_black_out_refuses_a_mask_of_another_size():
    with pytest.raises(ValueError, match="expected a mask of"):
        black_out(np.zeros((4, 4, 3), np.uint8), np.ones((5, 4), bool))


@pytest.mark.parametrize(
    ("point", "inside"),
    [
        ((0.5, 0.5), True),
        ((0.1, 0.1), False),
        ((0.25, 0.5), True),
        ((0.75, 0.75), True),
        ((0.76, 0.5), False),
    ],
)
def test_points_in_polygon_counts_edges_and_vertices_as_inside(point, inside):
    assert points_in_polygon(np.array([point]), np.asarray(SQUARE))[0] == inside


def test_entered_lists_zones_holding_a_box_centre_on_any_frame_in_pixels_of_the_frame():
    zones = Zones([zone("door"), zone("desk", ((0.8, 0.8), (1, 0.8), (1, 1), (0.8, 1)), mask=False)])
    # [K, 5] rows (t, x1, y1, x2, y2) of a 640x360 frame: the centre walks from the left edge into the door
    boxes = np.array([[0.0, 0, 100, 40, 140], [0.5, 280, 160, 320, 200]], np.float32)
    assert zones.entered(boxes, 360, 640) == ["door"]
    assert zones.entered(boxes[:1], 360, 640) == []
    assert zones.entered(boxes[:, 1:], 360, 640) == ["door"]  # [K, 4] too
    # the same boxes on a frame twice as large are in the top-left quarter: outside every zone
    assert zones.entered(boxes, 720, 1280) == []
    corner = np.array([[600, 330, 640, 360]], np.float32)  # centre (620, 345): in the desk corner
    assert zones.entered(corner, 360, 640) == ["desk"]
    assert zones.entered(np.zeros((0, 5), np.float32), 360, 640) == []
    assert Zones().entered(boxes, 360, 640) == []


@pytest.mark.parametrize(
    ("points", "reason"),
    [
        (((0, 0), (1, 0)), "at least 3"),
        (((0, 0), (1.2, 0), (0, 1)), "fractions of the frame"),
        (((0, 0), (-0.1, 0), (0, 1)), "fractions of the frame"),
        (((0, 0), (0.5, 0.5), (1, 1)), "with an area"),
        (tuple((i / 200, (i % 2) / 2) for i in range(101)), "at most 100"),
        (((0, 0), (float("nan"), 0), (0, 1)), "fractions of the frame"),
    ],
)
def test_bad_polygons_are_refused(points, reason):
    with pytest.raises(ValidationError, match=reason):
        ZoneConfig(name="z", points=points)


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "door/1"])
def test_bad_names_are_refused(name):
    with pytest.raises(ValidationError, match="name"):
        ZoneConfig(name=name, points=SQUARE)


def test_unknown_keys_and_duplicate_names_are_refused():
    with pytest.raises(ValidationError, match="extra"):
        ZoneConfig(name="z", points=SQUARE, colour="red")
    with pytest.raises(ValueError, match=r"unique per camera, got duplicates \['door'\]"):
        Zones([zone(), zone(mask=True)])


def tracked(boxes, ids) -> Detections:
    n = len(boxes)
    xyxy = np.asarray(boxes, np.float32).reshape(n, 4)
    return Detections(
        xyxy, np.ones(n, np.float32), np.zeros((n, 5, 2), np.float32), np.asarray(ids, np.int64)
    )


def test_zone_visits_collect_each_tracks_zones_over_its_frames_and_forget_ended_tracks():
    visits = ZoneVisits(Zones([zone("door"), zone("top", ((0, 0), (1, 0), (1, 0.2), (0, 0.2)))]))
    shape = (100, 200, 3)
    visits.note(tracked([[0, 0, 20, 10], [90, 40, 110, 60], [0, 90, 10, 100]], [1, 2, -1]), shape)
    visits.note(tracked([[90, 40, 110, 60]], [1]), shape)  # track 1 walks into the door
    visits.note(tracked([], []), shape)
    out = [SimpleNamespace(end=TrackEnd(i, True, 0.0, 1.0, 2), zones=None) for i in (1, 2)]
    ended = [o.end for o in out] + [TrackEnd(3, False, 0.0, 0.0, 1)]
    assert visits.label(ended, out) is out
    assert [o.zones for o in out] == [("door", "top"), ("door",)]  # in config order
    late = [SimpleNamespace(end=TrackEnd(1, True, 0.0, 1.0, 2), zones=None)]
    assert visits.label([late[0].end], late)[0].zones == ()  # forgotten once ended


def test_zone_visits_without_zones_label_none():
    visits = ZoneVisits()
    visits.note(tracked([[0, 0, 20, 10]], [1]), (100, 200, 3))
    out = [SimpleNamespace(end=TrackEnd(1, True, 0.0, 1.0, 2), zones=("x",))]
    assert visits.label([out[0].end], out)[0].zones is None
