"""The instance catalog and the per-request service prices, loaded from the dated data files beside this module.

Every price carries the date it was published and its source, because cloud prices change: the course shows
what an action *would* have cost, never a bill.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache

import yaml

from ..paths import PRICING_DIR


class UnknownInstanceType(KeyError):
    pass


@dataclass(frozen=True)
class Instance:
    id: str
    cloud: str
    service: str
    machine_type: str
    accelerator_type: str | None
    gpu_model: str
    gpu_count: int
    gpu_memory_gib: float
    vcpus: int
    ram_gib: float
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float | None
    price_date: str
    source: str
    verified: bool
    note: str = ""

    @property
    def gpu_hour_usd(self) -> float | None:
        """On-demand price of one GPU for one hour (None for CPU-only machines)."""
        return self.on_demand_usd_per_hour / self.gpu_count if self.gpu_count else None

    def hourly(self, spot: bool = False) -> float:
        if spot and self.spot_usd_per_hour is not None:
            return self.spot_usd_per_hour
        return self.on_demand_usd_per_hour


@dataclass(frozen=True)
class Price:
    key: str
    usd: float
    unit: str
    price_date: str
    source: str
    verified: bool
    note: str = ""


class Catalog:
    def __init__(self, data: dict):
        known = {f.name for f in fields(Instance)}
        self.instances = [Instance(**{k: v for k, v in row.items() if k in known}) for row in data["instances"]]
        self.commitments: dict = data.get("commitments", {})
        self.spot_interruption: dict = data.get("spot_interruption", {})

    def get(self, name: str, *, service: str | None = None, accelerator_type: str | None = None) -> Instance:
        """Find an instance by id, or by the machine type an SDK uses (optionally narrowed by service or GPU)."""
        matches = [
            i
            for i in self.instances
            if name in (i.id, i.machine_type)
            and (service is None or i.service == service)
            and (accelerator_type is None or i.accelerator_type == accelerator_type)
        ]
        matches.sort(key=lambda i: i.id != name)  # an exact id beats a machine-type match
        if not matches:
            raise UnknownInstanceType(f"{name!r} is not in the course's instance catalog")
        return matches[0]

    def find(self, service: str, machine_type: str, accelerator_type: str | None) -> Instance:
        """The row for exactly this machine and accelerator (None: no accelerator) on a service, as Vertex AI names
        its shapes (a machine type alone does not say which GPU is attached)."""
        for instance in self.instances:
            if (instance.service, instance.machine_type, instance.accelerator_type) == (
                service,
                machine_type,
                accelerator_type,
            ):
                return instance
        shape = machine_type + (f" with {accelerator_type}" if accelerator_type else "")
        raise UnknownInstanceType(f"{shape!r} on {service} is not in the course's instance catalog")

    def frame(self):
        import pandas as pd

        return pd.DataFrame([i.__dict__ for i in self.instances]).set_index("id")


class ServicePrices:
    def __init__(self, data: dict):
        self._prices = {key: Price(key=key, **value) for key, value in data["prices"].items()}

    def __getitem__(self, key: str) -> Price:
        return self._prices[key]

    def __contains__(self, key: str) -> bool:
        return key in self._prices

    def keys(self):
        return self._prices.keys()

    def __iter__(self):
        return iter(self._prices)

    def token_cost(self, prefix: str, per: str, input_tokens: int, output_tokens: int) -> tuple[float, str]:
        """A model call's tokens at `{prefix}.input_per_{per}_tokens` and `.output_per_{per}_tokens` (per: "1k" or
        "1m"): (USD, the price keys used, joined by " + "). A direction without a listed price counts $0."""
        scale = {"1k": 1e3, "1m": 1e6}[per]
        usd, keys = 0.0, []
        for direction, tokens in (("input", input_tokens), ("output", output_tokens)):
            key = f"{prefix}.{direction}_per_{per}_tokens"
            if key in self and tokens:
                usd += self[key].usd * tokens / scale
                keys.append(key)
        return usd, " + ".join(keys)


@cache
def load_catalog() -> Catalog:
    return Catalog(yaml.safe_load((PRICING_DIR / "instances.yaml").read_text()))


@cache
def load_service_prices() -> ServicePrices:
    return ServicePrices(yaml.safe_load((PRICING_DIR / "services.yaml").read_text()))
