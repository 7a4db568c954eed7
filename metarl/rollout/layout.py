"""Where env slots live: which family, which worker process, which pipeline group.

A *slot* is one env built once in a worker.  Slot ids are ordered by ``(group, worker)`` so each
pipeline group is a contiguous range of slot ids.  Slots are spread over the ``groups x workers``
bins by longest-processing-time-first on an estimated per-step cost, separately for the families of
the train split and for the others, so a collect over either split keeps both workers (and both
groups of each worker) about equally busy.

The layout never depends on timings taken at run time: the same arguments give the same layout, so
results are reproducible run to run.  Only the grouping of slots into policy batches can affect
results (a policy's output may depend on its batch), and it is a pure function of the arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Wall time of one step in microseconds per Meta-World v3 class: the best of 8 rounds of 150 random-action
# steps, all 50 classes in one process (metaworld 3.1.1, MuJoCo 3.3.0, the 2-core development machine).
# Only ratios matter: they balance slots across workers.  Families not listed get the median.
METAWORLD_STEP_COST_US: dict[str, float] = {
    "assembly-v3": 329, "basketball-v3": 245, "bin-picking-v3": 264, "box-close-v3": 278,
    "button-press-topdown-v3": 201, "button-press-topdown-wall-v3": 168, "button-press-v3": 168,
    "button-press-wall-v3": 173, "coffee-button-v3": 212, "coffee-pull-v3": 705, "coffee-push-v3": 658,
    "dial-turn-v3": 195, "disassemble-v3": 331, "door-close-v3": 320, "door-lock-v3": 199, "door-open-v3": 302,
    "door-unlock-v3": 195, "hand-insert-v3": 500, "drawer-close-v3": 277, "drawer-open-v3": 244,
    "faucet-open-v3": 187, "faucet-close-v3": 226, "hammer-v3": 303, "handle-press-side-v3": 257,
    "handle-press-v3": 277, "handle-pull-side-v3": 307, "handle-pull-v3": 270, "lever-pull-v3": 378,
    "pick-place-wall-v3": 713, "pick-out-of-hole-v3": 291, "pick-place-v3": 634, "plate-slide-v3": 357,
    "plate-slide-side-v3": 340, "plate-slide-back-v3": 307, "plate-slide-back-side-v3": 344,
    "peg-insert-side-v3": 387, "peg-unplug-side-v3": 323, "soccer-v3": 647, "stick-push-v3": 727,
    "stick-pull-v3": 749, "push-v3": 702, "push-wall-v3": 706, "push-back-v3": 636, "reach-v3": 326,
    "reach-wall-v3": 415, "shelf-place-v3": 746, "sweep-into-v3": 675, "sweep-v3": 552, "window-open-v3": 202,
    "window-close-v3": 209,
}  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """The placement of every env slot.  Slot ``s`` runs family ``slot_family[s]`` in worker
    ``slot_worker[s]`` and is stepped with pipeline group ``slot_group[s]``."""

    slot_family: tuple[str, ...]
    slot_worker: tuple[int, ...]
    slot_group: tuple[int, ...]
    num_workers: int
    num_groups: int

    @property
    def num_slots(self) -> int:
        return len(self.slot_family)

    def group_range(self, group: int) -> tuple[int, int]:
        """``[lo, hi)`` slot ids of ``group`` (groups are contiguous)."""
        ids = [s for s, g in enumerate(self.slot_group) if g == group]
        return (ids[0], ids[-1] + 1) if ids else (0, 0)

    def worker_slots(self, worker: int) -> list[int]:
        return [s for s, w in enumerate(self.slot_worker) if w == worker]

    def worker_families(self, worker: int) -> list[str]:
        """The families (one entry per env) worker ``worker`` builds, in slot order."""
        return [self.slot_family[s] for s in self.worker_slots(worker)]

    def describe(self) -> list[dict[str, object]]:
        """One dict per worker: its slots, their families and groups."""
        return [
            {
                "worker": w,
                "slots": self.worker_slots(w),
                "families": self.worker_families(w),
                "groups": [self.slot_group[s] for s in self.worker_slots(w)],
            }
            for w in range(self.num_workers)
        ]


def family_costs(families: Sequence[str], overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Estimated relative step cost per family: ``overrides``, else the Meta-World table, else the median."""
    known = [METAWORLD_STEP_COST_US[f] for f in families if f in METAWORLD_STEP_COST_US]
    default = float(sorted(known)[len(known) // 2]) if known else 1.0
    out = {f: float(METAWORLD_STEP_COST_US.get(f, default)) for f in families}
    for f, c in (overrides or {}).items():
        if f not in out:
            raise ValueError(f"family_costs names family {f!r}, which is not served; served: {list(families)}")
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
            raise ValueError(f"family_costs[{f!r}] must be a positive finite number, got {c!r}")
        out[f] = float(c)
    return out


def _partition(items: list[tuple[str, int]], costs: Mapping[str, float], bins: int) -> list[list[tuple[str, int]]]:
    """Split ``items`` into ``bins`` lists of about equal total cost: longest-first, then improving swaps."""
    out: list[list[tuple[str, int]]] = [[] for _ in range(bins)]
    load = [0.0] * bins
    for item in items:  # items come sorted longest first
        b = min(range(bins), key=lambda i: (load[i], len(out[i]), i))
        out[b].append(item)
        load[b] += costs[item[0]]
    for _ in range(4 * len(items)):  # move or swap single items between the fullest and the emptiest bin
        hi = max(range(bins), key=lambda i: (load[i], -i))
        lo = min(range(bins), key=lambda i: (load[i], i))
        gap = load[hi] - load[lo]
        best: tuple[float, int, int] | None = None  # (new gap, index in hi, index in lo or -1 for a move)
        for i, a in enumerate(out[hi]):
            ca = costs[a[0]]
            if abs(gap - 2 * ca) < gap - 1e-9 and (best is None or abs(gap - 2 * ca) < best[0]):
                best = (abs(gap - 2 * ca), i, -1)
            for j, c in enumerate(out[lo]):
                d = ca - costs[c[0]]
                if d > 0 and abs(gap - 2 * d) < gap - 1e-9 and (best is None or abs(gap - 2 * d) < best[0]):
                    best = (abs(gap - 2 * d), i, j)
        if best is None:
            break
        _, i, j = best
        a = out[hi].pop(i)
        load[hi] -= costs[a[0]]
        if j >= 0:
            c = out[lo].pop(j)
            out[hi].append(c)
            load[hi] += costs[c[0]]
            load[lo] -= costs[c[0]]
        out[lo].append(a)
        load[lo] += costs[a[0]]
    return out


def make_layout(
    families: Sequence[str],
    slots_per_family: int,
    num_workers: int,
    num_groups: int,
    costs: Mapping[str, float],
    first_families: Sequence[str] = (),
) -> Layout:
    """Place ``slots_per_family`` slots of each family on ``num_workers`` workers and ``num_groups`` groups.

    Workers are balanced first (what bounds throughput).  With as many workers as groups or more,
    a pipeline group is a set of whole workers (worker ``w`` in group ``w % num_groups``): a worker
    then waits only for its own group's policy call, during which its core is free for that call,
    and never for other workers.  With fewer workers, each worker's slots are split into groups.
    ``first_families`` (e.g. the train split's) are balanced among themselves first, then the rest,
    so a collect over either subset is balanced.  Workers left without slots are dropped.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if num_groups not in (1, 2):
        raise ValueError(f"num_groups must be 1 or 2, got {num_groups}")
    if slots_per_family < 1:
        raise ValueError(f"slots_per_family must be >= 1, got {slots_per_family}")
    first = [f for f in families if f in set(first_families)]
    rest = [f for f in families if f not in set(first)]
    by_worker = num_workers >= num_groups
    placed: list[tuple[int, int, str, int]] = []  # (group, worker, family, copy)
    for subset in (first, rest):
        items = [(f, k) for f in subset for k in range(slots_per_family)]
        # Longest first; ties broken by the family's position, so the result is deterministic.
        items.sort(key=lambda fk: (-costs[fk[0]], families.index(fk[0]), fk[1]))
        for w, mine in enumerate(_partition(items, costs, num_workers)):
            if by_worker:  # the pipeline groups are sets of whole workers
                placed.extend((w % num_groups, w, fam, k) for fam, k in mine)
                continue
            mine.sort(key=lambda fk: (-costs[fk[0]], families.index(fk[0]), fk[1]))
            for g, part in enumerate(_partition(mine, costs, num_groups)):
                placed.extend((g, w, fam, k) for fam, k in part)
    used_workers = sorted({w for _, w, _, _ in placed})
    renumber = {w: i for i, w in enumerate(used_workers)}
    used_groups = sorted({g for g, _, _, _ in placed})
    regroup = {g: i for i, g in enumerate(used_groups)}
    placed.sort(key=lambda p: (regroup[p[0]], renumber[p[1]], families.index(p[2]), p[3]))
    return Layout(
        slot_family=tuple(p[2] for p in placed),
        slot_worker=tuple(renumber[p[1]] for p in placed),
        slot_group=tuple(regroup[p[0]] for p in placed),
        num_workers=len(used_workers),
        num_groups=len(used_groups),
    )
