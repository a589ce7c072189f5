"""gallery/config.py: the gallery section of a YAML file, validated with bounds and no unknown keys."""

from __future__ import annotations

import pytest

from gallery.config import GalleryConfig, load_gallery_config
from gallery.errors import ConfigError


def test_defaults_and_section(tmp_path):
    assert load_gallery_config(None) == GalleryConfig()
    (tmp_path / "none.yaml").write_text("detect: {model: x}\n")
    assert load_gallery_config(tmp_path / "none.yaml") == GalleryConfig()
    (tmp_path / "g.yaml").write_text(
        "gallery:\n  db_url: sqlite:///x.db\n  index: {hnsw_above: 10}\n  threshold: {target_fpir: 0.001}\n"
    )
    cfg = load_gallery_config(tmp_path / "g.yaml")
    assert (cfg.db_url, cfg.index.hnsw_above, cfg.threshold.target_fpir) == ("sqlite:///x.db", 10, 0.001)


def test_every_field_is_described():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            if isinstance(field.default_factory, type):
                walk(field.default_factory)

    walk(GalleryConfig)


@pytest.mark.parametrize(
    "text,message",
    [
        ("gallery: {colour: red}", "gallery.colour: Extra inputs are not permitted"),
        ("gallery: {threshold: {target_fpir: 2}}", "gallery.threshold.target_fpir"),
        ("gallery: {serve: {port: 0}}", "gallery.serve.port"),
        ("[1, 2]", "expected a mapping"),
        ("gallery: {index: [", "cannot read config"),
    ],
)
def test_bad_config(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_gallery_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_gallery_config(tmp_path / "missing.yaml")
