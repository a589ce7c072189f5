"""The package installs as a wheel and runs from any folder, with the configs it ships.

Builds the wheel from the checkout's files, installs it with ``pip install --target`` into a temporary
``site`` folder and runs the ``facemoe-pipeline`` console script from a folder outside the checkout, with
that folder as the only ``PYTHONPATH`` entry. Third-party packages still come from this interpreter's
environment; the checkout itself is taken off ``sys.path`` and the editable install's finders are removed,
so a module missing from the wheel fails here instead of being found in the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import ASSETS, ROOT, require

pytestmark = pytest.mark.slow

CLIP = ASSETS / "videos" / "friends_in_video.mp4"
MODELS = ASSETS / "models"

# What is not a source file is never copied into the build tree. The wheel is built from a copy because
# setuptools reuses a stale build/lib: a module deleted from the sources would still ship.
NOT_SOURCES = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*_cache", "*.db*")

# Run in the child before anything of the project is imported: forget the checkout and the editable install.
BOOT = textwrap.dedent(
    """
    import os, sys
    checkout = {checkout!r}
    def _editable(obj):
        return str(getattr(obj, "__module__", "") or "").startswith("__editable__")
    def _inside(path, folder):
        return (os.path.realpath(path or ".") + os.sep).startswith(os.path.realpath(folder) + os.sep)
    sys.meta_path[:] = [f for f in sys.meta_path if not _editable(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not _editable(h)]
    # the checkout's own folders go; the interpreter's environment stays, even when it lives in the checkout
    sys.path[:] = [
        p for p in sys.path if "__editable__" not in p and (not _inside(p, checkout) or _inside(p, sys.prefix))
    ]
    sys.path_importer_cache.clear()
    """
)

CHECK = textwrap.dedent(
    """
    import importlib, importlib.resources, json
    mods = {}
    for name in ("core", "facemoe", "stages", "gallery", "pipeline", "configs", "run_pipeline"):
        mods[name] = importlib.import_module(name).__file__
    default = importlib.resources.files("configs").joinpath("default.yaml")
    found = {"modules": mods, "default_yaml": str(default), "is_file": default.is_file(), "sys_path": sys.path}
    print(json.dumps(found))
    """
)

MAIN = textwrap.dedent(
    """
    import runpy
    script = os.path.join({site!r}, "bin", "facemoe-pipeline")
    sys.argv = [script] + sys.argv[1:]
    if os.path.isfile(script):  # the console script pip generated from [project.scripts]
        runpy.run_path(script, run_name="__main__")
    else:
        import run_pipeline
        sys.exit(run_pipeline.main())
    """
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The wheel built from the checkout, installed (without dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCES), symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheel_cmd = ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)]
    subprocess.run(pip + wheel_cmd, check=True, cwd=tmp, timeout=600)
    (wheel,) = (tmp / "dist").glob("facemoe_surveillance-*.whl")
    target = tmp / "site"
    install_cmd = ["install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)]
    subprocess.run(pip + install_cmd, check=True, cwd=tmp, timeout=600)
    return target


def _env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "HUGGINGFACE_"))}
    env["PYTHONPATH"] = str(site)
    env.update(extra)
    return env


def _python(code: str, site: Path, cwd: Path, args=(), env=None) -> subprocess.CompletedProcess:
    """``python -c BOOT+code args...`` from ``cwd`` (outside the checkout) with only ``site`` on PYTHONPATH."""
    assert not cwd.resolve().is_relative_to(ROOT.resolve())
    command = [sys.executable, "-c", BOOT.format(checkout=str(ROOT)) + code, *map(str, args)]
    env = env or _env(site)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _pipeline(site: Path, cwd: Path, *args, env=None) -> subprocess.CompletedProcess:
    return _python(MAIN.format(site=str(site)), site, cwd, args, env=env)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def test_the_wheel_holds_every_package_and_the_configs(site, tmp_path):
    run = _python(CHECK, site, tmp_path)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    for name, path in found["modules"].items():
        assert path and _inside(Path(path), site), f"{name} imported from {path}"
    assert found["is_file"] and _inside(Path(found["default_yaml"]), site)
    for name in ("default", "cpu", "gpu", "test"):
        assert (site / "configs" / f"{name}.yaml").is_file()
    for name in ("astronaut_face.jpg", "README.md"):  # the detectors' self-check photo, where it comes from
        assert (site / "stages" / "data" / name).is_file()
    revisions = site / "gallery" / "migrations" / "versions"
    assert list(revisions.glob("0001_*.py")), "alembic revisions not shipped"
    # relative entries ('' for -c) are the child's cwd, tmp_path; the environment may live in the checkout (.venv)
    prefix = Path(sys.prefix)
    leaks = [
        p for p in found["sys_path"] if _inside(tmp_path / p, ROOT) and not _inside(tmp_path / p, prefix)
    ]
    assert not leaks


def _test_config(tmp_path: Path) -> Path:
    """The repository's configs/test.yaml with its (relative) model paths made absolute: shared/assets/models."""
    cfg = yaml.safe_load((ROOT / "configs" / "test.yaml").read_text())
    for section in ("detect", "embed"):
        cfg[section]["model"] = str(require(MODELS / Path(cfg[section]["model"]).name))
    out = tmp_path / "test.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def test_installed_console_script_processes_a_clip_from_another_folder(site, tmp_path):
    clip = require(CLIP)
    config = _test_config(tmp_path)
    db = f"sqlite:///{tmp_path / 'x.db'}"
    run = _pipeline(site, tmp_path, "process", clip, "--config", config, "--db", db)
    assert run.returncode == 0, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert (tmp_path / "x.db").is_file()


def test_without_config_the_packaged_default_is_used(site, tmp_path):
    """Offline and with empty model caches, the packaged default.yaml is found and the run stops at its weights."""
    clip = require(CLIP)
    home = tmp_path / "home"
    home.mkdir()
    caches = {
        "HOME": home,
        "HF_HOME": home / "hf",
        "INSIGHTFACE_HOME": home / "insightface",
        "XDG_CACHE_HOME": home / ".cache",
        "TORCH_HOME": home / "torch",
    }
    env = _env(site, HF_HUB_OFFLINE="1", **{k: str(v) for k, v in caches.items()})
    run = _pipeline(site, tmp_path, "process", clip, "--db", f"sqlite:///{tmp_path / 'x.db'}", env=env)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, f"exit {run.returncode}\nstderr:\n{run.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got:\n{run.stderr}"
    line = lines[0]
    assert "config file not found" not in line.lower(), line
    assert any(word in line for word in ("buffalo_l", "FaceMoE", "briar", "weights")), line
