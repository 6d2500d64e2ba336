"""Turn a pytest-benchmark JSON of the op benchmarks into the markdown tables of RESULTS.md.

    pytest benchmarks/bench_op_*.py --benchmark-enable --benchmark-json=ops.json
    python benchmarks/summarize.py ops.json > tables.md

One table per op: rows = shape, columns = implementation (best time in ms, GFLOP/s, % of the fp32
matmul peak measured in the same run), then the best backend's speed-up over the torch reference
and over the naive materializing implementation.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def tables(path: str) -> str:
    data = json.load(open(path))
    by_op: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    machine = None
    for b in data["benchmarks"]:
        op = b["name"].split("[", 1)[0]
        impl = b["params"]["impl"]
        shape = b["params"].get("model") or b["name"].split("[", 1)[1].rstrip("]").rsplit("-", 1)[0]
        by_op[op.removeprefix("test_")][shape][impl] = {"ms": 1e3 * b["stats"]["min"], **b["extra_info"]}
        machine = machine or b["extra_info"]
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores, torch threads {machine['torch_threads']}, "
             f"torch {machine['torch']}; fp32 matmul peak measured in the run: {machine['peak_fp32_gflops']} GFLOP/s "
             f"({machine['peak_matmul_n']}^3). Time = best round.", ""]
    for op, shapes in by_op.items():
        impls = sorted({i for s in shapes.values() for i in s}, key=["naive", "torch", "cpp", "cuda", "triton"].index)
        lines += [f"### {op}", "", "| shape | " + " | ".join(f"{i} ms (GFLOP/s, %peak)" for i in impls) +
                  " | fastest backend | vs torch | vs naive |", "|---" * (len(impls) + 4) + "|"]
        for shape, res in shapes.items():
            cells = [f"{r['ms']:.2f} ({r['gflops']:.0f}, {r['pct_peak']:.0f}%)" if (r := res.get(i)) else "-" for i in impls]
            backends = {i: r for i, r in res.items() if i != "naive"}
            best = min(backends, key=lambda i: backends[i]["ms"])
            ratio = lambda ref: f"{res[ref]['ms'] / backends[best]['ms']:.2f}x" if ref in res else "-"  # noqa: E731
            lines.append(f"| {shape} | " + " | ".join(cells) + f" | {best} | {ratio('torch')} | {ratio('naive')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(tables(sys.argv[1]))
