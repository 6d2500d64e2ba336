"""Compile the Triton kernels for an NVIDIA GPU without one (ahead of time, with Triton's ptxas).

Each op's launcher in kernels/<op>.py (``mda_fast.kernels``, found by mda_fast.ops.backends.kernel:
installed, or the source checkout's kernels/) runs on CPU tensors with ``JITFunction.run`` replaced by a
recorder, so what gets compiled is exactly what the launcher would launch: same kernel, constexprs
(tile sizes, LOWP), argument dtypes and grid. Each recorded launch is then compiled for the target
with ``triton.compile`` and reported: registers per thread, spilled bytes, shared memory, whether
the PTX uses tensor-core MMA, and the grid (programs launched).

    python tests/triton_aot.py --arch 80 --arch 90    # table for sm_80 (A100) and sm_90 (H100/H200)

Must run without TRITON_INTERPRET=1 (the interpreter replaces the JIT functions); tests call it in a
subprocess for that reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

import torch


@dataclass
class Launch:
    case: str  # "<op>/<dtype>[/<variant>]"
    kernel: str
    grid: tuple
    signature: dict
    constexprs: dict
    options: dict  # launch options: num_warps, num_stages


@dataclass
class Compiled:
    case: str
    kernel: str
    arch: int
    grid: tuple
    programs: int
    num_warps: int
    regs: int
    spill_bytes: int
    shared_bytes: int
    mma: str  # "wgmma", "mma" (mma.sync) or "" (no tensor-core instruction)


def record_launches() -> list[Launch]:
    """Run every op's Triton launcher on CPU tensors, recording (kernel, signature, constexprs, grid)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("triton_aot must run without TRITON_INTERPRET=1")
    from triton.runtime.jit import JITFunction, mangle_type

    launches: list[Launch] = []
    case = [""]

    def recorder(self, *args, grid, warmup, **kwargs):
        bound = dict(zip(self.arg_names, args))
        bound.update({k: v for k, v in kwargs.items() if k in self.arg_names})
        sig, const = {}, {}
        for p in self.params:
            v = bound[p.name]
            if p.is_constexpr:
                sig[p.name], const[p.name] = "constexpr", v
            else:
                sig[p.name] = mangle_type(v)
        g = tuple(int(x) for x in (grid if isinstance(grid, tuple) else (grid,)))
        opts = {k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs}
        launches.append(Launch(case[0], self.fn.__name__, g, sig, const, opts))

    import mda_fast.ops.backend_triton as tb
    from mda_fast.ops.projection import SeededProjection

    saved = JITFunction.run
    JITFunction.run = recorder
    try:
        gen = torch.Generator().manual_seed(0)
        B, T, I, O, n, k = 2, 96, 80, 48, 3, 40  # odd sizes: masks, k not a block multiple
        for dt in (torch.float32, torch.bfloat16):
            name = str(dt).replace("torch.", "")
            a = torch.randn(B, T, I, generator=gen).to(dt)
            g = torch.randn(B, T, O, generator=gen).to(dt)
            case[0] = f"project_per_sample_grad/{name}/dense"
            tb.project_per_sample_grad(a, g, torch.randn(I, k).to(dt), torch.randn(O, k).to(dt))
            case[0] = f"project_per_sample_grad/{name}/seeded"
            tb.project_per_sample_grad(a, g, SeededProjection(I, k, 1), SeededProjection(O, k, 2))
            case[0] = f"grad_dot_queries/{name}"
            tb.grad_dot_queries(a, g, torch.randn(n, O, I).to(dt), "materialized")
            case[0] = f"ekfac_lambda_accumulate/{name}"
            tb.ekfac_lambda_accumulate(a, g, torch.eye(I).to(dt), torch.eye(O).to(dt), torch.zeros(O, I), "factored")
            case[0] = f"kron_inverse_apply_grouped/{name}"
            blk = (torch.eye(I).to(dt), torch.eye(O).to(dt), torch.rand(O, I).to(dt), torch.randn(n, O, I).to(dt), 0.1)
            tb.kron_inverse_apply_grouped([blk, blk])
        # op 5's head takes the fp32 logits whatever the model dtype; V = 2100: 3 draw blocks, ragged
        z, ys = torch.randn(7, 2100, generator=gen), [torch.randint(0, 2100, (7,), generator=gen)] * 2
        case[0] = "linear_cross_entropy/float32/draw"
        tb.linear_cross_entropy_head(z.clone(), ys, torch.rand(7, generator=gen, dtype=torch.float64))
        case[0] = "linear_cross_entropy/float32/labels"
        tb.linear_cross_entropy_head(z.clone(), ys, None)
    finally:
        JITFunction.run = saved
    return launches


def _resources(cubin: bytes) -> tuple[int, int, int]:
    """(registers, spill bytes, static shared bytes) from cuobjdump -res-usage of a cubin."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    num = lambda key: int(m.group(1)) if (m := re.search(rf"\b{key}:(\d+)", out)) else 0  # noqa: E731
    return num("REG"), num("STACK"), num("SHARED")


def compile_launch(launch: Launch, arch: int) -> Compiled:
    """Compile one recorded launch for sm_<arch>; raises if Triton or ptxas rejects it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from mda_fast.ops.backends import kernel

    mod = kernel(_KERNEL_FILES[launch.kernel])
    fn = getattr(mod, launch.kernel)
    src = ASTSource(fn=fn, signature=launch.signature, constexprs=launch.constexprs)
    c = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=launch.options)
    ptx = c.asm["ptx"]
    mma = "wgmma" if "wgmma.mma_async" in ptx else ("mma" if re.search(r"\bmma\.sync", ptx) else "")
    regs, spills, _ = _resources(c.asm["cubin"])
    programs = 1
    for x in launch.grid:
        programs *= x
    return Compiled(launch.case, launch.kernel, arch, launch.grid, programs, int(c.metadata.num_warps), regs,
                    spills, int(c.metadata.shared), mma)


# kernel function name -> kernels/<file>.py that defines it
_KERNEL_FILES = {
    "_ppsg_kernel": "project_per_sample_grad",
    "_gdq_kernel": "grad_dot_queries",
    "_lambda_kernel": "ekfac_lambda_accumulate",
    "_grouped_gemm": "kron_inverse_apply",
    "_lce_kernel": "linear_cross_entropy",
}


def compile_all(archs: list[int]) -> list[Compiled]:
    seen, unique = set(), []
    for launch in record_launches():
        key = (launch.kernel, *(json.dumps(d, sort_keys=True) for d in (launch.signature, launch.constexprs, launch.options)))
        if key not in seen:  # the same specialization launched twice (e.g. op 4's four stages) compiles once
            seen.add(key)
            unique.append(launch)
    return [compile_launch(launch, arch) for arch in archs for launch in unique]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, action="append",
                    help="compute capability x10 (80 = A100, 90 = H100/H200); repeatable; default 90")
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = ap.parse_args(argv)
    rows = compile_all(args.arch or [90])
    if args.json:
        print(json.dumps([asdict(r) for r in rows]))
        return 0
    print("| case | kernel | sm | warps | regs | spill B | smem B | tensor-core MMA | grid (test shape) |")
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r.case} | {r.kernel} | {r.arch} | {r.num_warps} | {r.regs} | {r.spill_bytes} | {r.shared_bytes} | "
              f"{r.mma or 'none'} | {r.grid} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
