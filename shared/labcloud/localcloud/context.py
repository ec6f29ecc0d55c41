"""What every cloud's services in the local cloud get to work with: state, the meter, child processes, hooks.

Each cloud extends it (`aws.context.AwsContext` adds moto). A service module has `register(gateway, context)`;
`register_services` imports every module of a services package and calls it.

Work that was under way when the local cloud last stopped (a training job, an endpoint being created) cannot go
on: its processes are gone, after a crash as after `labcloud down`. Each service that runs such work registers
with `on_interrupted`; at start, before the server answers, `end_interrupted` has each mark its unfinished work
failed in its own cloud's shape (a FailureReason, an error message) saying LOCAL_CLOUD_STOPPED, and logs what.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..pricing.catalog import Catalog
from ..pricing.ledger import CostLedger, CostLine
from .processes import ChildProcesses

log = logging.getLogger(__name__)

LOCAL_CLOUD_STOPPED = "the local cloud stopped"  # the reason work interrupted by a stop or a crash is failed with


@dataclass(kw_only=True)
class CloudContext:
    state_dir: Path  # this cloud's own records (jobs, endpoints, tables), beside any emulator's snapshots
    ledger: CostLedger
    catalog: Catalog
    children: ChildProcesses
    url: str = ""  # the local cloud's own URL, known once the server has bound its port
    cloud: str = ""  # "aws", "gcp": the cloud the meter's lines are for
    _started_hooks: list[Callable[[], None]] = field(default_factory=list)
    _shutdown_hooks: list[Callable[[], None]] = field(default_factory=list)
    _interrupted_hooks: list[tuple[str, Callable[[str], list[str]]]] = field(default_factory=list)

    def in_background(self, target: Callable, name: str, *args) -> threading.Thread:
        """Run `target(*args)` on a daemon thread; an exception is logged, never raised into the server."""

        def run():
            try:
                target(*args)
            except Exception:
                log.exception("background work %s failed", name)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    def meter(
        self, *, service: str, action: str, resource: str, quantity: float, unit: str, usd: float, price_key: str
    ) -> None:
        """Add what an action would have cost on the real cloud to the meter."""
        if self.ledger is not None:
            self.ledger.add(
                CostLine(
                    cloud=self.cloud,
                    service=service,
                    action=action,
                    resource=resource,
                    quantity=quantity,
                    unit=unit,
                    usd=usd,
                    price_key=price_key,
                )
            )

    def records(self, kind: str) -> Path:
        """The folder for one kind of record, e.g. records("training-jobs")."""
        path = self.state_dir / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def on_started(self, hook: Callable[[], None]) -> None:
        """Run `hook` once the state is restored and the server listens (e.g. to restart endpoints)."""
        self._started_hooks.append(hook)

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        self._shutdown_hooks.append(hook)

    def on_interrupted(self, kind: str, end: Callable[[str], list[str]]) -> None:
        """Register `end(reason)`: it fails the `kind` of work (e.g. "SageMaker training jobs") that its records
        show unfinished, with `reason` in the cloud's own failure message, and returns the names it failed."""
        self._interrupted_hooks.append((kind, end))

    def end_interrupted(self) -> dict[str, list[str]]:
        """Fail the work the last run left unfinished (once, at start, before serving); what was failed, by kind."""
        ended = {}
        for kind, end in self._interrupted_hooks:
            try:
                names = end(LOCAL_CLOUD_STOPPED)
            except Exception:
                log.exception("could not end the %s that the last run left unfinished", kind)
                continue
            if names:
                ended[kind] = names
                log.info("%s unfinished when the local cloud stopped, now failed: %s", kind, ", ".join(names))
        return ended

    def started(self, url: str) -> None:
        self.url = url
        for hook in self._started_hooks:
            try:
                hook()
            except Exception:
                log.exception("start hook %s failed", hook)

    def shutdown(self) -> None:
        for hook in reversed(self._shutdown_hooks):
            try:
                hook()
            except Exception:
                log.exception("shutdown hook %s failed", hook)
        self.children.stop_all()


def register_services(package, gateway, context) -> list[str]:
    """Register every module of `package` (a services package) that has `register(gateway, context)`."""
    registered = []
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        if hasattr(module, "register"):
            module.register(gateway, context)
            registered.append(module_info.name)
    return registered
