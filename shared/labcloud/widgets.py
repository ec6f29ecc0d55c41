"""Interactive explorers used in the notebooks (ipywidgets). Each also works as a plain call in a headless run."""

from __future__ import annotations

from functools import cache

import yaml

from .paths import DATA_DIR
from .pricing import models

CLOUDS = ("aws", "gcp", "azure")


@cache
def service_map() -> list[dict]:
    return yaml.safe_load((DATA_DIR / "service_map.yaml").read_text())["capabilities"]


def service_map_frame():
    import pandas as pd

    rows = [
        {"capability": c["name"], "model": c["model"], **{cloud: c[cloud]["service"] for cloud in CLOUDS}}
        for c in service_map()
    ]
    return pd.DataFrame(rows).set_index("capability")


def service_explorer():
    """Pick a capability (and a delivery model) and read what each cloud offers for it."""
    import ipywidgets as w

    capabilities = service_map()
    model = w.ToggleButtons(options=["all", "IaaS", "PaaS", "SaaS"], description="model")
    picker = w.Dropdown(description="capability", layout=w.Layout(width="60%"))
    detail = w.HTML()

    def refresh_options(*_):
        picker.options = [(c["name"], c["id"]) for c in capabilities if model.value in ("all", c["model"])]

    def show(*_):
        chosen = next((c for c in capabilities if c["id"] == picker.value), None)
        if chosen is None:
            detail.value = ""
            return
        rows = "".join(
            f"<tr><td><b>{cloud.upper()}</b></td><td>{chosen[cloud]['service']}</td>"
            f"<td>{chosen[cloud].get('note', '')}</td></tr>"
            for cloud in CLOUDS
        )
        detail.value = (
            f"<p><i>{chosen['model']}</i> · used in lab {chosen.get('course_lab', '-')}</p><table>{rows}</table>"
        )

    model.observe(refresh_options, names="value")
    picker.observe(show, names="value")
    refresh_options()
    show()
    return w.VBox([model, picker, detail])


def plot_spot_tradeoff(
    work_hours: float, rate_per_hour: float, checkpoint_cost_h: float, restart_overhead_h: float, ax=None
):
    """Expected wall-clock hours against the checkpoint interval, with Young's approximation marked."""
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    intervals = np.geomspace(0.05, work_hours, 200)
    hours = [
        models.spot_expected(work_hours, rate_per_hour, t, checkpoint_cost_h, restart_overhead_h).expected_hours
        for t in intervals
    ]
    no_checkpoints = models.spot_expected(work_hours, rate_per_hour, None, 0, restart_overhead_h).expected_hours
    ax.plot(intervals, hours, label="with checkpoints")
    ax.axhline(no_checkpoints, color="tab:red", linestyle="--", label="no checkpoints")
    ax.axhline(work_hours, color="grey", linestyle=":", label="no interruptions")
    if rate_per_hour > 0:
        young = models.optimal_checkpoint_interval(checkpoint_cost_h, rate_per_hour)
        ax.axvline(young, color="tab:green", linestyle="-.", label=f"Young: {young:.2f} h")
    ax.set(xscale="log", xlabel="checkpoint interval (h of work)", ylabel="expected wall-clock hours")
    ax.set_ylim(work_hours * 0.95, max(min(no_checkpoints, work_hours * 3), max(hours)) * 1.05)
    ax.legend(fontsize=8)
    return ax


def spot_explorer(work_hours: float = 24.0):
    """Sliders for the interruption rate, checkpoint cost and restart overhead, redrawing the trade-off."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    def draw(rate_per_hour=0.1, checkpoint_minutes=6.0, restart_minutes=15.0):
        plot_spot_tradeoff(work_hours, rate_per_hour, checkpoint_minutes / 60, restart_minutes / 60)
        plt.show()

    return w.interactive(
        draw,
        rate_per_hour=w.FloatLogSlider(value=0.1, base=10, min=-3, max=0, step=0.1, description="λ per hour"),
        checkpoint_minutes=w.FloatSlider(value=6, min=0.5, max=30, step=0.5, description="ckpt (min)"),
        restart_minutes=w.FloatSlider(value=15, min=0, max=60, step=1, description="restart (min)"),
    )


def plot_fleets(traffic, comparison, step_hours: float, ax=None):
    """Traffic over the day against the autoscaled and the fixed fleet."""
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    hours = np.arange(len(traffic)) * step_hours
    ax.plot(hours, traffic, color="tab:blue", label="requests / s")
    ax.set(xlabel="hour of day", ylabel="requests / s")
    fleet_axis = ax.twinx()
    fleet_axis.step(hours, comparison.autoscaled_replicas, where="post", color="tab:orange", label="autoscaled")
    fleet_axis.axhline(comparison.fixed_replicas, color="tab:red", linestyle="--", label="fixed fleet")
    fleet_axis.set_ylabel("replicas")
    fleet_axis.set_ylim(0, comparison.fixed_replicas * 1.2)
    lines = ax.get_legend_handles_labels()[0] + fleet_axis.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper left")
    return ax
