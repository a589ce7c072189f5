"""gallery/config.py: the gallery section of a YAML file, validated with bounds and no unknown keys, through
the one loader of core.config (core.errors.ConfigError naming the file and the dotted key)."""

from __future__ import annotations

import pytest

from core.config import Section
from core.errors import ConfigError, UserError
from gallery.config import GalleryConfig, IndexConfig, load_gallery_config
from gallery.errors import GalleryError


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
        ("gallery: {colour: red}", "bad.yaml: unknown config key gallery.colour"),
        ("gallery: {threshold: {target_fpir: 2}}", "bad.yaml: config key gallery.threshold.target_fpir"),
        ("gallery: {serve: {port: 0}}", "config key gallery.serve.port: .*, got 0"),
        ("gallery: {index: {gpu: maybe}}", "config key gallery.index.gpu"),
        ("gallery: 5", "config key gallery: "),
        ("[1, 2]", "expected a mapping at the top, got list"),
        ("gallery: {index: [", "is not valid YAML"),
    ],
)
def test_bad_config(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_gallery_config(tmp_path / "bad.yaml")
    assert len(str(caught.value).splitlines()) == 1
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_gallery_config(tmp_path / "missing.yaml")


def test_shared_section_base_and_error_roots():
    assert issubclass(GalleryConfig, Section) and issubclass(IndexConfig, Section)
    assert issubclass(GalleryError, UserError) and issubclass(ConfigError, UserError)
    import gallery.errors

    assert not hasattr(gallery.errors, "ConfigError")
