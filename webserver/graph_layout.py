"""The graph page's layout, computed server-side: longest-path layers from the sources, long edges broken
by dummy points, the order within each layer refined by barycenter sweeps (fewer crossings); edges drawn
as SVG path data. No Flask here: pure geometry on task keys.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

NODE_W, NODE_H = 200, 40
GAP_X, GAP_Y = 64, 14
DUMMY_PITCH = 10
PAD = 12
#: Long edges get dummy points (better ordering) only while there are at most this many of them.
MAX_DUMMIES = 6000
SWEEPS = 6


@dataclass
class Placed:
    key: str
    x: float
    y: float


@dataclass
class Layout:
    width: float
    height: float
    nodes: dict[str, Placed]
    #: (from key, to key, SVG path data)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    layers: int = 0


def layered_layout(order: Sequence[str], edges: Iterable[tuple[str, str]]) -> Layout:
    """Place ``order``'s nodes left to right in layers, with ``edges`` (u -> v) drawn between them.

    ``order`` should be topological; an edge against it is laid out as if reversed (drawn as given).
    Layers: the longest path from a source, sources then pulled next to their nearest successor.
    Within a layer: barycenter of the neighbours in the adjacent layer, sweeping both ways.
    """
    pos = {n: i for i, n in enumerate(order)}
    pairs = sorted({(u, v) for u, v in edges if u in pos and v in pos and u != v}, key=lambda e: (pos[e[0]], pos[e[1]]))
    forward = [(u, v) if pos[u] < pos[v] else (v, u) for u, v in pairs]
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for u, v in set(forward):
        preds[v].append(u)
        succs[u].append(v)
    layer: dict[str, int] = {}
    for n in order:
        layer[n] = max((layer[p] + 1 for p in preds[n]), default=0)
    for n in order:
        if not preds[n] and succs[n]:
            layer[n] = min(layer[s] for s in succs[n]) - 1

    # Dummy points along edges that span several layers.
    chains: dict[tuple[str, str], list[str]] = {}
    span_total = sum(max(layer[v] - layer[u] - 1, 0) for u, v in set(forward))
    use_dummies = span_total <= MAX_DUMMIES
    up: dict[str, list[str]] = defaultdict(list)
    down: dict[str, list[str]] = defaultdict(list)
    rank = dict(layer)
    origin: dict[str, int] = {n: pos[n] for n in order}
    for u, v in sorted(set(forward), key=lambda e: (pos[e[0]], pos[e[1]])):
        chain = [u]
        if use_dummies:
            for step in range(layer[u] + 1, layer[v]):
                dummy = f"\0{u}\0{v}\0{step}"
                rank[dummy] = step
                origin[dummy] = pos[u]
                chain.append(dummy)
        chain.append(v)
        chains[(u, v)] = chain
        for a, b in zip(chain, chain[1:], strict=False):
            down[a].append(b)
            up[b].append(a)

    depth = max(rank.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(depth)]
    for n in sorted(rank, key=lambda k: (origin[k], k)):
        layers[rank[n]].append(n)
    index = {n: i for lay in layers for i, n in enumerate(lay)}

    def sweep(levels: Iterable[int], neighbours: dict[str, list[str]]) -> None:
        for lv in levels:
            current = layers[lv]

            def key(n: str, current: list[str] = current) -> float:
                near = neighbours.get(n)
                if not near:
                    return float(index[n])
                return sum(index[m] for m in near) / len(near)

            current.sort(key=key)
            for i, n in enumerate(current):
                index[n] = i

    for _ in range(SWEEPS):
        sweep(range(1, depth), up)
        sweep(range(depth - 2, -1, -1), down)

    heights = [sum(DUMMY_PITCH if n.startswith("\0") else NODE_H + GAP_Y for n in lay) for lay in layers]
    tallest = max(heights, default=0)
    coords: dict[str, tuple[float, float]] = {}
    for lv, lay in enumerate(layers):
        y = PAD + (tallest - heights[lv]) / 2
        x = float(PAD + lv * (NODE_W + GAP_X))
        for n in lay:
            if n.startswith("\0"):
                coords[n] = (x, y + DUMMY_PITCH / 2 - NODE_H / 2)
                y += DUMMY_PITCH
            else:
                coords[n] = (x, y)
                y += NODE_H + GAP_Y

    placed = {n: Placed(n, *coords[n]) for n in order}
    drawn: list[tuple[str, str, str]] = []
    for u, v in pairs:
        chain = chains[(u, v)] if (u, v) in chains else list(reversed(chains[(v, u)]))
        points: list[tuple[float, float]] = []
        for i, n in enumerate(chain):
            x, y = coords[n]
            mid = y + NODE_H / 2
            if i > 0:
                points.append((x, mid))
            if i < len(chain) - 1:
                points.append((x + NODE_W, mid))
        drawn.append((u, v, _curve(points)))
    width = float(PAD * 2 + max(depth, 1) * (NODE_W + GAP_X) - GAP_X)
    return Layout(width=width, height=PAD * 2 + tallest, nodes=placed, edges=drawn, layers=depth)


@functools.lru_cache(maxsize=32)
def _cached_layout(order: tuple[str, ...], edges: tuple[tuple[str, str], ...]) -> Layout:
    """:func:`layered_layout`, remembered per process for the last few graphs (a DAG's graph is laid out
    the same until its tasks change; laying out 50 tasks cost more than the rest of the view). Shared: read only."""
    return layered_layout(order, edges)


def _curve(points: Sequence[tuple[float, float]]) -> str:
    """SVG path data through ``points``: horizontal runs as lines, layer gaps as S-curves."""
    (x0, y0) = points[0]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for (ax, ay), (bx, by) in zip(points, points[1:], strict=False):
        if abs(ay - by) < 0.5 and bx >= ax:
            parts.append(f"L{bx:.1f},{by:.1f}")
        else:
            bend = max(abs(bx - ax) / 2, 24.0)
            parts.append(f"C{ax + bend:.1f},{ay:.1f} {bx - bend:.1f},{by:.1f} {bx:.1f},{by:.1f}")
    return " ".join(parts)


