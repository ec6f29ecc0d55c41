"""Notebook runs cannot stall silently: a hung cell fails the run fast with a clear message."""

from __future__ import annotations

import pytest

from labcloud.notebooks import run_notebook

HANGING_NOTEBOOK = """# %%
ready = True

# %%
import time

time.sleep(120)

# %%
print("never reached")
"""


@pytest.mark.slow
def test_a_cell_that_does_not_finish_fails_the_run_and_names_the_cell(tmp_path):
    notebook = tmp_path / "hangs.py"
    notebook.write_text(HANGING_NOTEBOOK)
    result = run_notebook(notebook, output_dir=tmp_path / "out", timeout_s=5)
    assert result.status == "failed" and result.ename == "CellTimeoutError"
    assert result.cell_index == 1 and "did not finish within 5 s" in result.error
    assert result.seconds < 60  # the run stops at the cell's timeout, not the sleep's end
