"""The `labcloud` command line: the local cloud's lifecycle, notebooks, labs and quizzes."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .localcloud import control


def _up(args) -> int:
    info = control.start(args.state, port=args.port)
    print(f"local cloud up at {info.url} (pid {info.pid}, state {info.state_dir})")
    return 0


def _down(args) -> int:
    print("local cloud stopped" if control.stop(args.state) else "local cloud was not running")
    return 0


def _status(args) -> int:
    info = control.status(args.state)
    if info is None:
        print("local cloud: not running")
        return 1
    health = control.health(info) or {}
    print(f"local cloud: up at {info.url} (pid {info.pid}, uptime {health.get('uptime_s', 0):.0f} s)")
    print(f"state: {info.state_dir}; services: {', '.join(health.get('services', []))}")
    return 0


def _env(args) -> int:
    from .connect import local_environment

    info = control.status(args.state) or control.start(args.state)
    for name, value in local_environment(info).items():
        print(f"export {name}={shlex.quote(value)}")  # a connection string has ; and =
    return 0


def _run(args) -> int:
    from .notebooks import run_notebook

    parameters = dict(args.parameter or [])
    result = run_notebook(Path(args.notebook), parameters=parameters, output_dir=args.output)
    print(f"{result.name}: {result.status} in {result.seconds:.1f} s -> {result.output}")
    if result.error:
        print(result.error, file=sys.stderr)
    return 0 if result.ok else 1


def _course(args) -> int:
    from .notebooks import run_course

    results = run_course(only=args.only, output_dir=args.output)
    return 0 if all(r.ok for r in results) else 1


def _build_labs(args) -> int:
    from .notebooks import build_labs

    stale = build_labs(check=args.check)
    if args.check and stale:
        print(
            "labs/ is out of date with solutions/ (run `make labs`):\n  " + "\n  ".join(stale),
            file=sys.stderr,
        )
        return 1
    print("labs/ is up to date" if args.check else f"wrote {len(stale)} lab(s)")
    return 0


def _reference(args) -> int:
    from .notebooks import write_references

    for path in write_references(only=args.only):
        print(f"wrote {path}")
    return 0


def _quiz(args) -> int:
    from .quiz import run_terminal_quiz

    return run_terminal_quiz(args.section)


def _jupyter_settings(args) -> int:
    from .notebooks import install_jupyter_settings

    print(f"wrote {install_jupyter_settings()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labcloud", description="Cloud AI Lab: the local cloud and the course.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    for name, handler, help_text in (
        ("up", _up, "start the local cloud (or find it running)"),
        ("down", _down, "stop the local cloud and everything it started"),
        ("status", _status, "say whether the local cloud is up and healthy"),
        ("env", _env, "print shell exports that point SDKs and CLIs at the local cloud"),
    ):
        p = command(name, handler, help_text)
        p.add_argument("--state", type=Path, default=None, help="state folder (default: $LABCLOUD_HOME or ~/.labcloud)")
        if name == "up":
            p.add_argument("--port", type=int, default=None, help="port to listen on (a free one if taken)")

    p = command("run", _run, "run one notebook with papermill; the executed copy goes under build/")
    p.add_argument("notebook")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"))
    p.add_argument("--output", type=Path, default=None)

    p = command("course", _course, "run every solution notebook and print a table")
    p.add_argument("--only", nargs="*", default=None, help="section numbers, e.g. 01 02")
    p.add_argument("--output", type=Path, default=None)

    p = command("build-labs", _build_labs, "generate labs/ from solutions/")
    p.add_argument("--check", action="store_true", help="fail when labs/ is out of date instead of writing")

    p = command("reference", _reference, "re-execute solutions into solutions/executed/ (the nbval references)")
    p.add_argument("--only", nargs="*", default=None)

    p = command("quiz", _quiz, "take a section's quiz in the terminal")
    p.add_argument("section", help="section number, e.g. 01")

    command("jupyter-settings", _jupyter_settings, "make JupyterLab open the course's .py notebooks as notebooks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except control.LocalCloudError as exc:
        print(f"labcloud: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
