"""The README's Python example, run as written: a renamed argument or op fails here, not for a
reader."""

from __future__ import annotations

import re
from pathlib import Path

import torch


def test_the_readme_python_example_runs_and_its_inverses_give_the_input_back():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks, "README has no python block"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    torch.testing.assert_close(namespace["x_back"], namespace["x"], atol=1e-5, rtol=1e-5)
    assert namespace["z"].shape == (64, 16) and namespace["kl"].shape == (64,)
    assert namespace["images"].shape[1:] == (1, 8, 8)
