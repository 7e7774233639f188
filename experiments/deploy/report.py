"""The deployment table as Markdown (rows, reasons for the rows left out, the pick per model) and as a plot."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

ORDER = [
    (runtime, precision)
    for runtime in ("onnxruntime", "LiteRT", "TVM", "TVM tuned", "onnxruntime-web")
    for precision in ("fp32", "int8")
]
NOTES = {
    "TVM": "untuned (tuning.trials=0: TVM's default schedules)",
    "TVM tuned": "MetaSchedule, tuned in this run (trials and time: above); the plain 2D network's tasks that the "
    "stream model's log lacks tuned into it",
    "onnxruntime-web": "headless Chromium, WebAssembly SIMD, 2 threads; the onnxruntime file; timed by the page "
    "(each StreamSession.step), in page runs between chunks of the Python rounds; ratio: median of the page runs' "
    "ratios; agreement on the frames the page read",
}
COLUMNS = "| model | runtime | precision | median ms | p95 ms | TSM stream / plain 2D | MB | top-1 agreement | note |"


def numbers(row: dict) -> dict[str, float]:
    """Median and p95 ms of the stream, its median over the plain 2D network's (or the median of the row's
    ``ratios``, where it has them), MB and agreement."""
    stream = row["stream"]
    ratio = statistics.median(stream) / statistics.median(row["plain"])
    return {
        "median": statistics.median(stream),
        "p95": float(np.percentile(stream, 95)),
        "ratio": statistics.median(row["ratios"]) if "ratios" in row else ratio,
        "mb": row["mb"],
        "agreement": row["agreement"],
    }


def summarise(table: dict[str, dict]) -> dict[str, dict]:
    """:func:`numbers` of every measured row, by model and then by (runtime, precision)."""
    return {name: {key: numbers(row) for key, row in rows.items()} for name, rows in table.items()}


def rows_markdown(summary: dict[str, dict], skips: dict[str, str]) -> str:
    """The table (rows in :data:`ORDER`, a reason where a row has no numbers) and the pick per model."""
    lines = [COLUMNS, "|" + "---|" * COLUMNS.count(" | ") + "---|"]
    for name, rows in summary.items():
        for runtime, precision in ORDER:
            if (runtime, precision) in rows:
                n = rows[runtime, precision]
                lines.append(
                    f"| {name} | {runtime} | {precision} | {n['median']:.2f} | {n['p95']:.2f} | {n['ratio']:.3f} "
                    f"| {n['mb']:.2f} | {n['agreement']:.3f} | {NOTES.get(runtime, '')} |"
                )
            else:
                lines.append(f"| {name} | {runtime} | {precision} | - | - | - | - | - | {skips[runtime]} |")
    picks = [pick(name, rows) for name, rows in summary.items()]
    return "\n".join([*lines, "", "## Pick", "", *picks]) + "\n"


def pick(name: str, rows: dict[tuple[str, str], dict[str, float]]) -> str:
    """The fastest row of a model by median, and its fastest fp32 row."""
    fastest = min(rows, key=lambda key: rows[key]["median"])
    fp32 = min((key for key in rows if key[1] == "fp32"), key=lambda key: rows[key]["median"])
    said = {
        key: f"{' '.join(key)} {rows[key]['median']:.2f} ms (agreement {rows[key]['agreement']:.3f})" for key in rows
    }
    return f"- {name}: fastest {said[fastest]}; fastest fp32 {said[fp32]}."


def plot(summary: dict[str, dict], path: Path, size: int) -> None:
    """Per model, each row's median ms per frame (bar) and p95 (whisker), and the plain 2D network's time the
    ratio column implies (median / ratio: diamond)."""
    fig = Figure(figsize=(10, 1.6 + 0.45 * sum(len(rows) for rows in summary.values())))
    axes = fig.subplots(len(summary), 1, squeeze=False)[:, 0]
    colors = {"fp32": "tab:blue", "int8": "tab:orange"}
    for ax, (name, rows) in zip(axes, summary.items(), strict=True):
        keys = [key for key in ORDER if key in rows][::-1]
        n = [rows[key] for key in keys]
        y = np.arange(len(keys))
        errors = [[0] * len(n), [r["p95"] - r["median"] for r in n]]
        bars = [colors[key[1]] for key in keys]
        ax.barh(y, [r["median"] for r in n], xerr=errors, color=bars, ecolor="gray", capsize=3)
        ax.plot([r["median"] / r["ratio"] for r in n], y, "D", color="black", markersize=5)
        ax.set_yticks(y, [" ".join(key) for key in keys])
        ax.set_xscale("log")
        ax.set_title(f"{name}: ms per streamed frame ({size}x{size}, batch 1)")
    axes[-1].set_xlabel("ms per frame (log scale)")
    handles = [Patch(color=color, label=f"{precision}, median (whisker: p95)") for precision, color in colors.items()]
    handles.append(Line2D([], [], marker="D", color="black", linestyle="", label="plain 2D network (median / ratio)"))
    fig.legend(handles=handles, loc="lower center", ncol=3)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
