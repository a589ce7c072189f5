"""The README's Python API example, parsed from README.md and run twice in a fresh folder: the second run
enrolls nothing new and does not fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ASSETS, ROOT, require


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"## Python API\n\n```python\n(.*?)```", text, re.S)
    assert found, "README.md: no python block under '## Python API'"
    return found.group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs_twice(tmp_path):
    require(ASSETS / "videos" / "friends_in_video.mp4")
    # its relative paths: configs/ in the working folder, ../shared/assets beside it
    work = tmp_path / "work"
    work.mkdir()
    (work / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "shared").symlink_to(ASSETS.parent)
    script = tmp_path / "example.py"
    script.write_text(readme_example(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outputs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=work, capture_output=True, text=True, timeout=600, env=env
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(proc.stdout)
    first_face = outputs[0].splitlines()[0]
    assert "Rachel" in first_face and outputs[1].splitlines()[0] == first_face
