from __future__ import annotations

import pytest

from core.config import Section, parse_overrides
from core.errors import ConfigError
from pipeline.config import AppConfig, default_config_path, load_config
from tests.conftest import ROOT

DEFAULT = ROOT / "configs" / "default.yaml"
TEST = ROOT / "configs" / "test.yaml"


def test_shipped_configs_validate():
    default = load_config(DEFAULT)
    assert (default.embed.backend, default.embed.checkpoint, default.detect.backend) == (
        "facemoe",
        "briar",
        "scrfd",
    )
    test = load_config(TEST)
    assert test.embed.backend == "onnx" and test.embed.model.endswith("mobilefacenet_128d.onnx")
    assert test.detect.model.endswith("scrfd_500m_bnkps.onnx")


@pytest.mark.parametrize("name, device, precision", [("cpu", "cpu", "int8"), ("gpu", "cuda", "bf16")])
def test_hardware_variants_validate(name, device, precision):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert (cfg.detect.device, cfg.embed.device, cfg.embed.precision) == (device, device, precision)
    assert cfg.embed.checkpoint == "briar" and cfg.match.threshold is None


def test_overrides_are_typed():
    cfg = load_config(
        TEST, ["source.stride=3", "detect.input_size=[320, 320]", "match.threshold=null", "embed.flip=false"]
    )
    assert cfg.source.stride == 3 and cfg.detect.input_size == (320, 320)
    assert cfg.match.threshold is None and cfg.embed.flip is False


@pytest.mark.parametrize(
    "override,message",
    [
        ("detect.colour=red", "unknown config key detect.colour"),
        ("nosection.x=1", "unknown config key nosection"),
        ("source.stride=0", "config key source.stride: Input should be greater than or equal to 1, got 0"),
        ("detect.input_size=[100, 100]", "input_size must be multiples of 32"),
        ("detect.backend=mtcnn", "config key detect.backend"),
        ("source.start=5", None),
        ("embed.backend=facemoe", "needs checkpoint"),
        ("source.stride", "--set expects key.path=value"),
        ("source.stride.x=1", "source.stride is not a section"),
        ("detect.device=mps", "config key detect.device"),
        ("gallery.index.hnsw_m=1", "config key gallery.index.hnsw_m"),
    ],
)
def test_bad_values_name_the_key(override, message):
    if message is None:
        assert load_config(TEST, [override]).source.start == 5
        return
    with pytest.raises(ConfigError) as err:
        load_config(TEST, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_end_before_start():
    with pytest.raises(ConfigError, match="end must be after start"):
        load_config(TEST, ["source.start=5", "source.end=2"])


@pytest.mark.parametrize(
    "text,message",
    [
        ("detect: [1, 2", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("", "missing config key detect"),
    ],
)
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def test_every_field_is_described_and_sections_are_strict():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, Section):
                assert ann.model_config["extra"] == "forbid"
                walk(ann)

    assert AppConfig.model_config["extra"] == "forbid"
    walk(AppConfig)


def test_parse_overrides_values():
    assert parse_overrides(["a.b=1.5", "c=text", "d=[1,2]"]) == [
        (["a", "b"], 1.5),
        (["c"], "text"),
        (["d"], [1, 2]),
    ]


def test_packaged_default_is_the_repository_default():
    assert default_config_path().read_text() == DEFAULT.read_text()
    assert load_config(None) == load_config(DEFAULT)


def test_paths_in_a_file_are_relative_to_it_and_set_paths_to_the_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "c.yaml").write_text(
        "detect: {model: models/det.onnx}\n"
        "embed: {backend: facemoe, checkpoint: briar}\n"
        "gallery: {storage_dir: store}\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(folder / "c.yaml", ["embed.checkpoint=weights/model.pt"])
    assert cfg.detect.model == str(folder / "models" / "det.onnx")
    assert cfg.gallery.storage_dir == str(folder / "store")
    assert cfg.embed.checkpoint == str(tmp_path / "weights" / "model.pt")
    named = load_config(folder / "c.yaml", ["detect.model=buffalo_l"])
    assert (named.detect.model, named.embed.checkpoint) == ("buffalo_l", "briar")  # names, not paths
