"""The instance catalog (pricing/instances.yaml) and the service prices (pricing/services.yaml): every instance
the course names, dated and sourced prices, lookups as the SDKs name machines, and the discount tables."""

from __future__ import annotations

import datetime as dt
import math
from urllib.parse import urlparse

import pytest
import yaml

from labcloud.localcloud.aws import metering
from labcloud.paths import PRICING_DIR
from labcloud.pricing.catalog import Catalog, UnknownInstanceType, load_catalog, load_service_prices

# What the course names: (lookup name, lookup filters, cloud, GPU model, GPU count, GPU memory GiB per GPU)
COURSE_INSTANCES = [
    ("p3.2xlarge", {}, "aws", "V100", 1, 16),
    ("p4d.24xlarge", {}, "aws", "A100", 8, 40),
    ("p5.48xlarge", {}, "aws", "H100", 8, 80),
    ("n1-standard-8", {"accelerator_type": "NVIDIA_TESLA_V100"}, "gcp", "V100", 1, 16),
    ("a2-highgpu-8g", {}, "gcp", "A100", 8, 40),
    ("a3-highgpu-8g", {}, "gcp", "H100", 8, 80),
    ("Standard_NC6s_v3", {}, "azure", "V100", 1, 16),
    ("Standard_ND96asr_v4", {}, "azure", "A100", 8, 40),
    ("Standard_ND96amsr_A100_v4", {}, "azure", "A100-80GB", 8, 80),
    ("ml.p4d.24xlarge", {"service": "sagemaker-training"}, "aws", "A100", 8, 40),
    ("ml.p4d.24xlarge", {"service": "sagemaker-inference"}, "aws", "A100", 8, 40),
    ("ml.p3.2xlarge", {"service": "sagemaker-training"}, "aws", "V100", 1, 16),
    ("ml.p3.2xlarge", {"service": "sagemaker-inference"}, "aws", "V100", 1, 16),
    ("ml.g4dn.xlarge", {"service": "sagemaker-training"}, "aws", "T4", 1, 16),
    ("ml.g4dn.xlarge", {"service": "sagemaker-inference"}, "aws", "T4", 1, 16),
    ("ml.m5.xlarge", {"service": "sagemaker-training"}, "aws", "none", 0, 0),
    ("ml.m5.xlarge", {"service": "sagemaker-inference"}, "aws", "none", 0, 0),
    ("n1-standard-4", {"accelerator_type": "NVIDIA_TESLA_T4"}, "gcp", "T4", 1, 16),
    ("n1-standard-4", {"service": "vertex-prediction", "accelerator_type": "NVIDIA_TESLA_T4"}, "gcp", "T4", 1, 16),
]

SERVICES = {
    "aws": {"ec2", "sagemaker-training", "sagemaker-inference"},
    "gcp": {"compute-engine", "vertex-training", "vertex-prediction"},
    "azure": {"azure-vm"},
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _is_iso_date(text) -> bool:
    try:
        return dt.date.fromisoformat(text).isoformat() == text
    except (TypeError, ValueError):
        return False


def _is_https_url(text) -> bool:
    url = urlparse(text)
    return url.scheme == "https" and "." in url.netloc


@pytest.mark.parametrize(
    "name, filters, cloud, gpu_model, gpu_count, gpu_memory",
    COURSE_INSTANCES,
    ids=[f"{row[0]}{'+' + '+'.join(row[1].values()) if row[1] else ''}" for row in COURSE_INSTANCES],
)
def test_every_instance_the_course_names_is_in_the_catalog(
    catalog, name, filters, cloud, gpu_model, gpu_count, gpu_memory
):
    instance = catalog.get(name, **filters)
    assert instance.machine_type == name
    assert instance.cloud == cloud
    for key, value in filters.items():
        assert getattr(instance, key) == value
    assert (instance.gpu_model, instance.gpu_count, instance.gpu_memory_gib) == (gpu_model, gpu_count, gpu_memory)
    assert isinstance(instance.vcpus, int) and instance.vcpus > 0
    assert instance.ram_gib > 0
    assert instance.on_demand_usd_per_hour > 0
    assert _is_iso_date(instance.price_date), instance.price_date
    assert dt.date(2020, 1, 1) <= dt.date.fromisoformat(instance.price_date) <= dt.date.today()
    assert _is_https_url(instance.source), instance.source


def test_every_catalog_row_is_complete_and_consistent(catalog):
    assert len({i.id for i in catalog.instances}) == len(catalog.instances), "duplicate ids"
    for i in catalog.instances:
        assert i.cloud in SERVICES and i.service in SERVICES[i.cloud], i.id
        assert i.machine_type in i.id, i.id
        assert isinstance(i.gpu_count, int) and i.gpu_count >= 0, i.id
        assert (i.gpu_count == 0) == (i.gpu_model == "none") == (i.gpu_memory_gib == 0), i.id
        assert i.vcpus > 0 and i.ram_gib > 0, i.id
        assert math.isfinite(i.on_demand_usd_per_hour) and i.on_demand_usd_per_hour > 0, i.id
        assert _is_iso_date(i.price_date), i.id
        assert _is_https_url(i.source), i.id
        assert isinstance(i.verified, bool), i.id


def test_raw_rows_have_only_known_fields():
    # Catalog() silently drops unknown keys, so a misspelt field (e.g. "spot_usd_per_hr") would vanish.
    known = {
        "id",
        "cloud",
        "service",
        "machine_type",
        "accelerator_type",
        "gpu_model",
        "gpu_count",
        "gpu_memory_gib",
        "vcpus",
        "ram_gib",
        "on_demand_usd_per_hour",
        "spot_usd_per_hour",
        "price_date",
        "source",
        "verified",
        "note",
    }
    rows = yaml.safe_load((PRICING_DIR / "instances.yaml").read_text())["instances"]
    assert [(row["id"], set(row) - known) for row in rows if set(row) - known] == []
    assert [row["id"] for row in rows if known - {"note"} - set(row)] == []


def test_spot_is_cheaper_than_on_demand_where_there_is_a_spot_price(catalog):
    with_spot = [i for i in catalog.instances if i.spot_usd_per_hour is not None]
    assert len(with_spot) >= 10
    assert [i.id for i in with_spot if not 0 < i.spot_usd_per_hour < i.on_demand_usd_per_hour] == []
    # SageMaker and Vertex AI publish no fixed spot price, and Azure endpoints none here: those are None.
    assert catalog.get("ml.p4d.24xlarge", service="sagemaker-training").spot_usd_per_hour is None


def test_hourly_uses_spot_only_when_there_is_a_spot_price(catalog):
    p4d = catalog.get("p4d.24xlarge")
    assert p4d.hourly() == p4d.on_demand_usd_per_hour
    assert p4d.hourly(spot=True) == p4d.spot_usd_per_hour < p4d.hourly()
    sagemaker = catalog.get("ml.p4d.24xlarge", service="sagemaker-training")
    assert sagemaker.hourly(spot=True) == sagemaker.on_demand_usd_per_hour


# ---------------------------------------------------------------------------------------------------------
# Lookups
# ---------------------------------------------------------------------------------------------------------


def test_lookup_by_machine_type_with_service_and_accelerator(catalog):
    t4 = catalog.get("n1-standard-4", service="vertex-prediction", accelerator_type="NVIDIA_TESLA_T4")
    assert t4.id == "vertex-prediction:n1-standard-4+T4"
    assert t4.gpu_model == "T4"
    training = catalog.get("n1-standard-4", service="vertex-training", accelerator_type="NVIDIA_TESLA_T4")
    assert training.id == "vertex-training:n1-standard-4+T4"
    compute = catalog.get("n1-standard-4", service="compute-engine", accelerator_type="NVIDIA_TESLA_T4")
    assert compute.id == "n1-standard-4+T4"
    # Vertex AI charges more than the same VM on Compute Engine.
    assert t4.on_demand_usd_per_hour > compute.on_demand_usd_per_hour


def test_an_exact_id_beats_a_machine_type_match(catalog):
    # "n1-standard-4" is both the id of the CPU-only machine and the machine type of the T4 rows.
    plain = catalog.get("n1-standard-4")
    assert plain.id == "n1-standard-4" and plain.gpu_count == 0 and plain.accelerator_type is None
    assert catalog.get("n1-standard-4+T4").accelerator_type == "NVIDIA_TESLA_T4"


def test_sagemaker_lookup_by_service(catalog):
    inference = catalog.get("ml.g4dn.xlarge", service="sagemaker-inference")
    assert inference.id == "sagemaker-inference:ml.g4dn.xlarge"
    assert inference.service == "sagemaker-inference"
    training = catalog.get("ml.g4dn.xlarge", service="sagemaker-training")
    assert training.id == "sagemaker-training:ml.g4dn.xlarge"
    # SageMaker is dearer than the same machine on EC2.
    assert inference.on_demand_usd_per_hour > catalog.get("g4dn.xlarge").on_demand_usd_per_hour
    assert catalog.get("sagemaker-inference:ml.p4d.24xlarge").service == "sagemaker-inference"


@pytest.mark.parametrize(
    "name, filters",
    [
        ("p9.mega", {}),
        ("", {}),
        ("P4D.24XLARGE", {}),  # names are case-sensitive, as the SDKs' are
        ("p4d.24xlarge", {"service": "sagemaker-training"}),  # the SageMaker name is ml.p4d.24xlarge
        ("ml.g4dn.xlarge", {"service": "ec2"}),
        ("n1-standard-4", {"accelerator_type": "NVIDIA_H100_80GB"}),
        ("Standard_NC6s_v3", {"service": "compute-engine"}),
    ],
)
def test_unknown_types_raise_unknown_instance_type(catalog, name, filters):
    with pytest.raises(UnknownInstanceType, match="not in the course's instance catalog"):
        catalog.get(name, **filters)
    assert issubclass(UnknownInstanceType, KeyError)


def test_gpu_hour_price(catalog):
    p4d = catalog.get("p4d.24xlarge")
    assert p4d.gpu_hour_usd == pytest.approx(21.957642 / 8)
    assert p4d.gpu_hour_usd == pytest.approx(p4d.on_demand_usd_per_hour / 8)
    assert catalog.get("p5.48xlarge").gpu_hour_usd == pytest.approx(6.88)
    assert catalog.get("p3.2xlarge").gpu_hour_usd == catalog.get("p3.2xlarge").on_demand_usd_per_hour
    assert catalog.get("ml.m5.xlarge", service="sagemaker-training").gpu_hour_usd is None


def test_frame_is_indexed_by_id_with_a_row_per_instance(catalog):
    frame = catalog.frame()
    assert frame.index.name == "id" and frame.index.is_unique
    assert len(frame) == len(catalog.instances)
    assert frame.loc["p4d.24xlarge", "gpu_count"] == 8
    assert {"cloud", "service", "on_demand_usd_per_hour", "spot_usd_per_hour", "price_date"} <= set(frame.columns)


# ---------------------------------------------------------------------------------------------------------
# Discounts and interruptions
# ---------------------------------------------------------------------------------------------------------


METADATA = {"source", "price_date", "verified", "note"}


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_commitment_discounts_are_fractions(catalog, cloud):
    section = catalog.commitments[cloud]
    assert "https://" in section["source"] and _is_iso_date(section["price_date"])
    discounts = {k: v for k, v in section.items() if k not in METADATA}
    assert len(discounts) >= 2
    for name, value in discounts.items():
        assert isinstance(value, int | float) and not isinstance(value, bool), name
        assert 0 <= value < 1, (cloud, name, value)
    # A longer commitment earns a bigger discount.
    for one_year, three_years in (("reserved_1y", "reserved_3y"), ("savings_plan_1y", "savings_plan_3y")):
        if one_year in discounts:
            assert discounts[one_year] < discounts[three_years]
    if cloud == "gcp":
        assert discounts["committed_1y"] < discounts["committed_3y"]


@pytest.mark.parametrize("cloud, notice_seconds", [("aws", 120), ("gcp", 30), ("azure", 30)])
def test_spot_interruption_figures(catalog, cloud, notice_seconds):
    figures = catalog.spot_interruption[cloud]
    assert "https://" in figures["source"] and _is_iso_date(figures["price_date"])
    assert figures["notice_seconds"] == notice_seconds
    rates = {k: v for k, v in figures.items() if k.endswith("rate_per_hour")}
    assert "typical_rate_per_hour" in rates
    for name, rate in rates.items():
        assert isinstance(rate, int | float) and 0 <= rate < 1, (cloud, name, rate)


# ---------------------------------------------------------------------------------------------------------
# Service prices
# ---------------------------------------------------------------------------------------------------------


def test_service_prices_have_the_keys_the_aws_metering_uses():
    prices = load_service_prices()
    used = [metering._S3_WRITE, metering._S3_READ, metering._SQS, metering._CW_PUT]
    assert {key for key, _ in used} == {
        "aws.s3.put_per_1000",
        "aws.s3.get_per_1000",
        "aws.sqs.requests_per_million",
        "aws.cloudwatch.put_metric_data_per_1000",
    }
    for key, per in used:
        assert key in prices, key
        price = prices[key]
        assert price.key == key and price.usd > 0
        # The metering divides by the quantity the price's unit names.
        assert {1000: "1,000 ", 1_000_000: "1 million "}[per] in price.unit, (key, price.unit)
    assert prices["aws.s3.put_per_1000"].usd == pytest.approx(0.005)
    assert prices["aws.s3.get_per_1000"].usd == pytest.approx(0.0004)
    assert "aws.no.such.key" not in prices
    with pytest.raises(KeyError):
        prices["aws.no.such.key"]


def test_every_service_price_is_dated_and_sourced():
    prices = load_service_prices()
    assert len(prices.keys()) >= 20
    for key in prices.keys():  # noqa: SIM118 (ServicePrices is not a dict: it has no __iter__)
        price = prices[key]
        assert key.split(".")[0] in ("aws", "gcp", "azure"), key
        assert math.isfinite(price.usd) and price.usd > 0, key
        assert price.unit.strip(), key
        assert _is_iso_date(price.price_date), key
        assert _is_https_url(price.source), key
        assert isinstance(price.verified, bool), key
