"""`plan --explain`: where one decode step's time goes, by component and by resource.

Input is `Step.table` in milliseconds (component -> resource -> ms), which sums to the step.
`text_table` renders it with row and column totals; `write_png` draws one horizontal stacked bar
per component (segments = resources) and a last bar for the whole step, written atomically.
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict

from .roofline import RESOURCES

COLORS = {"compute": "#4c72b0", "HBM": "#dd8452", "interconnect": "#55a868", "latency": "#c44e52"}


def _rows(table: Dict[str, Dict[str, float]]):
    """Every component, largest first (a fully overlapped dispatch/combine shows as 0)."""
    return sorted(table.items(), key=lambda cr: -sum(cr[1].values()))


def text_table(table: Dict[str, Dict[str, float]], title: str = "", hidden_ms: float = 0.0) -> str:
    rows = _rows(table)
    w = max([len("component")] + [len(c) for c, _ in rows] + [len("step")])
    head = f"{'component':<{w}} " + " ".join(f"{r:>12}" for r in RESOURCES) + f" {'total':>10}"
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for comp, row in rows:
        lines.append(f"{comp:<{w}} " + " ".join(f"{row.get(r, 0.0):>12.3f}" for r in RESOURCES)
                     + f" {sum(row.values()):>10.3f}")
    tot = {r: sum(row.get(r, 0.0) for _, row in rows) for r in RESOURCES}
    lines.append("-" * len(head))
    lines.append(f"{'step':<{w}} " + " ".join(f"{tot[r]:>12.3f}" for r in RESOURCES)
                 + f" {sum(tot.values()):>10.3f}")
    lines.append("(milliseconds per decode step on one rank"
                 + (f"; {hidden_ms:.3f} ms of communication overlapped with the rows above)"
                    if hidden_ms else ")"))
    return "\n".join(lines)


def write_png(table: Dict[str, Dict[str, float]], path: str, title: str,
              hidden_ms: float = 0.0) -> None:
    """Stacked bars of the step, written to a temporary file and renamed into place."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = _rows(table)
    tot = {r: sum(row.get(r, 0.0) for _, row in rows) for r in RESOURCES}
    labels = [c for c, _ in rows] + ["whole step"]
    values = [row for _, row in rows] + [tot]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.6))
    left = [0.0] * len(labels)
    for res in RESOURCES:
        seg = [v.get(res, 0.0) for v in values]
        ax.barh(labels, seg, left=left, color=COLORS[res], label=res)
        left = [a + b for a, b in zip(left, seg)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.2f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds per decode step (one rank)" + (
        f"; {hidden_ms:.2f} ms of communication overlapped with compute/HBM" if hidden_ms else ""))
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / len(labels) - 0.08), ncol=4,
              fontsize=8, frameon=False)
    ax.set_xlim(0, max(left) * 1.15)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".explain-", suffix=".png", dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp creates 0600; a picture is for sharing
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
