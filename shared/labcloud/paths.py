"""Where things live: the course folder (notebooks, quizzes) and the local cloud's state folder."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"
PRICING_DIR = PACKAGE_DIR / "pricing"


def course_root() -> Path:
    """The folder holding solutions/, labs/ and quizzes/.

    `LABCLOUD_COURSE_DIR` wins; otherwise the checkout this package was installed from (editable install),
    otherwise the first parent of the working directory that has a `quizzes/` folder.
    """
    if env := os.environ.get("LABCLOUD_COURSE_DIR"):
        return Path(env).resolve()
    for candidate in (PACKAGE_DIR.parents[1], *Path.cwd().resolve().parents, Path.cwd().resolve()):
        if (candidate / "quizzes").is_dir() and (candidate / "solutions").is_dir():
            return candidate
    raise FileNotFoundError(
        "Cannot find the course folder (with solutions/ and quizzes/). Set LABCLOUD_COURSE_DIR to the checkout."
    )


def state_home() -> Path:
    """The local cloud's state folder: `LABCLOUD_HOME`, or `~/.labcloud`.

    Everything the learner stores (objects, queues, jobs) lives here, so a model trained in one lab can be
    deployed in another, and it survives `labcloud down`/`up`.
    """
    return Path(os.environ.get("LABCLOUD_HOME") or Path.home() / ".labcloud").expanduser().resolve()
