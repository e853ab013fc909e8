"""README's commands for running the tests by hand work as written: each pass it names
(`pytest -n 4 --serial skip`, `pytest --serial only`) collects every module without an
error when run, as a reader would, by the virtualenv's `pytest` from the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from process_util import ROOT

# "The passes by hand: `pytest -n 4 --serial skip`, then `pytest --serial only`."
HAND_PASSES = re.compile(r"The passes by\s+hand:\s+`([^`]+)`,\s+then\s+`([^`]+)`")


def readme_hand_passes() -> tuple[str, ...]:
    readme = (ROOT / "README.md").read_text()
    found = HAND_PASSES.search(readme)
    assert found, "README no longer names the passes by hand"
    return found.groups()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("index", [0, 1], ids=["parallel", "serial"])
def test_readme_pass_collects_without_errors(index):
    command = readme_hand_passes()[index].split()
    assert command[0] == "pytest", command
    pytest_script = Path(sys.executable).parent / "pytest"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run(
        [str(pytest_script), *command[1:], "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    # pytest exits 2 (interrupted) when a module fails to import
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
