"""leaky's benchmark: every contender side by side in one run, reported as ratios.

    python benchmarks/run.py --quick           # seconds; what CI runs so this cannot rot
    python benchmarks/run.py                   # the full run: sizes 10 .. 10**8
    python benchmarks/run.py --plot docs/throughput.png --json results.json
    python benchmarks/run.py --layouts-only --markdown layouts.md   # 2000x2000 x.T, F, ::-1

Contenders appear when installed: NumPy (needed for arrays), PyTorch (CPU,
its default thread count, on torch.from_numpy views of the same memory) and
numexpr.  Each timing is the median of several repeats of a timeit loop.
The memory-bandwidth reference is measured in the same run: np.copyto(out, x)
for out-of-place work, np.multiply(x, 1, out=x) for in-place work (on x's
unsigned-integer view of the same width, so that float16 measures memory and
not NumPy's float16 arithmetic); "of BW"
is that reference's time divided by leaky's, so 1.0 means leaky moves bytes
as fast as a plain copy.

In-place rows use alpha = 1 so that repeated calls leave the data, and its
random signs, as they were; every other row uses alpha = 0.01.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

import leaky
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

ALPHA = 0.01


def side_by_side(
    calls: dict[str, Any], repeats: int, budget: float, names: dict[str, Any] | None = None
) -> dict[str, float]:
    """Median seconds per call of each contender.

    The contenders take turns, one timeit loop (~budget seconds) each per
    round, so that the noise of a shared machine falls on all of them alike.
    A contender is a zero-argument callable, or a statement run in `names`.
    """
    timers = {name: timeit.Timer(call, globals=names) for name, call in calls.items()}
    numbers = {}
    for name, timer in timers.items():
        number = 1
        while True:
            elapsed = timer.timeit(number)
            if elapsed >= budget or number >= 10**7:
                break
            number = max(number * 2, int(number * budget / max(elapsed, 1e-9) * 1.1))
        numbers[name] = number
        if number == 1 and elapsed > 2 * budget:
            repeats = min(repeats, 3)  # huge arrays: fewer rounds, still a median
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, timer in timers.items():
            samples[name].append(timer.timeit(numbers[name]) / numbers[name])
    return {name: statistics.median(values) for name, values in samples.items()}


# ---------------------------------------------------------------- numbers


def one_liner(z: float, alpha: float = 0.01) -> float:
    return z if z > 0 else alpha * z


def one_liner_grad(z: float, alpha: float = 0.01) -> float:
    return 1.0 if z > 0 else alpha


def bench_numbers(repeats: int, budget: float) -> list[dict[str, Any]]:
    """Statements, not lambdas: a lambda would add a Python frame to every contender."""
    rows = []
    for label, value in (("-1.5", -1.5), ("1.5", 1.5), ("3", 3)):
        for func_name, ours, theirs in (
            ("leaky_relu", leaky_relu, one_liner),
            ("leaky_relu_grad", leaky_relu_grad, one_liner_grad),
        ):
            names = {"L": ours, "f": theirs, "x": value, "a": ALPHA}
            for form in ("f(x)", "f(x, a)", "f(x, alpha=a)"):
                statements = {"leaky": form.replace("f(", "L("), "one-liner": form, "abs": "abs(x)"}
                t = side_by_side(statements, repeats, budget, names)
                rows.append(
                    {
                        "function": func_name,
                        "x": label,
                        "form": form,
                        "leaky_ns": t["leaky"] * 1e9,
                        "one_liner_ns": t["one-liner"] * 1e9,
                        "abs_ns": t["abs"] * 1e9,
                        "vs_one_liner": t["leaky"] / t["one-liner"],
                        "vs_abs": t["leaky"] / t["abs"],
                    }
                )
    return rows


# ---------------------------------------------------------------- arrays


def optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


def contenders(np: Any, torch: Any, ne: Any, mode: str, x: Any, out: Any) -> dict[str, Any]:
    """name -> zero-argument callable, for one mode on one input."""
    a = ALPHA if mode != "in place" else 1.0
    c: dict[str, Callable[[], object]] = {}
    if mode == "out-of-place":
        c["leaky"] = lambda: leaky_relu(x, a)
        c["np.where"] = lambda: np.where(x > 0, x, a * x)
        c["np.maximum"] = lambda: np.maximum(x, a * x)
        c["BW copyto"] = lambda: np.copyto(out, x)
    elif mode == "out=":
        c["leaky"] = lambda: leaky_relu(x, a, out=out)
        c["np.maximum out="] = lambda: np.maximum(x, a * x, out=out)
        c["BW copyto"] = lambda: np.copyto(out, x)
    else:
        c["leaky"] = lambda: leaky_relu(x, a, out=x)
        c["np.maximum in place"] = lambda: np.maximum(x, a * x, out=x)
        # on the unsigned-int view: NumPy's float16 multiply is no bandwidth test
        bits = x.view(f"u{x.itemsize}")
        c["BW multiply"] = lambda: np.multiply(bits, 1, out=bits)
    if torch is not None:
        tx, tout = torch.from_numpy(x), torch.from_numpy(out)
        fn = torch.nn.functional
        if mode == "out-of-place":
            c["torch"] = lambda: fn.leaky_relu(tx, a)
        elif mode == "out=":
            c["torch out="] = lambda: torch._C._nn.leaky_relu(tx, a, out=tout)
        else:
            c["torch leaky_relu_"] = lambda: fn.leaky_relu_(tx, a)
    if ne is not None and x.dtype.char != "e":  # numexpr has no float16
        env = {"x": x, "a": x.dtype.type(a)}
        if mode == "out-of-place":
            c["numexpr"] = lambda: ne.evaluate("where(x > 0, x, a * x)", local_dict=env)
        else:
            target = out if mode == "out=" else x
            c["numexpr" + (" out=" if mode == "out=" else " in place")] = lambda: ne.evaluate(
                "where(x > 0, x, a * x)", local_dict=env, out=target
            )
    return c


def bench_arrays(
    np: Any, torch: Any, ne: Any, sizes: list[int], dtypes: list[str], repeats: int, budget: float
) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        for size in sizes:
            x = rng.standard_normal(size, dtype=np.float32).astype(dtype)
            out = np.empty_like(x)
            for mode in ("out-of-place", "out=", "in place"):
                times = side_by_side(contenders(np, torch, ne, mode, x, out), repeats, budget)
                rows.append(
                    {
                        "dtype": dtype,
                        "size": size,
                        "mode": mode,
                        "seconds": times,
                        "bytes": 2 * x.nbytes,
                    }
                )
                print_array_row(rows[-1], flush=True)
    return rows


def backward_contenders(np: Any, torch: Any, g: Any, z: Any, out: Any) -> dict[str, Any]:
    a = np.asarray(ALPHA, dtype=g.dtype)
    one = np.ones((), dtype=g.dtype)
    c: dict[str, Callable[[], object]] = {
        "leaky backward": lambda: leaky_relu_backward(g, z, ALPHA),
        "leaky backward out=": lambda: leaky_relu_backward(g, z, ALPHA, out=out),
        "leaky grad": lambda: leaky_relu_grad(z, ALPHA),
        "np.where(z > 0, g, g * a)": lambda: np.where(z > 0, g, g * a),
        "np.where(z > 0, 1, a)": lambda: np.where(z > 0, one, a),
    }
    if torch is not None:
        tg, tz = torch.from_numpy(g), torch.from_numpy(z)
        ones = torch.ones_like(tz)
        backward = torch.ops.aten.leaky_relu_backward
        c["torch backward"] = lambda: backward(tg, tz, ALPHA, False)
        c["torch backward(ones)"] = lambda: backward(ones, tz, ALPHA, False)
    return c


def bench_backward(
    np: Any, torch: Any, sizes: list[int], dtypes: list[str], repeats: int, budget: float
) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(1)
    for dtype in dtypes:
        for size in sizes:
            g = rng.standard_normal(size, dtype=np.float32).astype(dtype)
            z = rng.standard_normal(size, dtype=np.float32).astype(dtype)
            times = side_by_side(
                backward_contenders(np, torch, g, z, np.empty_like(g)), repeats, budget
            )
            rows.append({"dtype": dtype, "size": size, "seconds": times})
            others = {
                n: t
                for n, t in times.items()
                if n in ("np.where(z > 0, g, g * a)", "torch backward")
            }
            best = min(others, key=others.__getitem__)
            print(
                f"  {dtype:8s} {size:>11,d}  backward {fmt_time(times['leaky backward']):>10s}"
                f"  x{others[best] / times['leaky backward']:5.2f} vs {best:26s}"
                f"  grad {fmt_time(times['leaky grad']):>10s}",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------- layouts


def layout_cases(np: Any, x: Any) -> dict[str, tuple[Any, Any]]:
    """layout name -> (input, out or None), all with x's values and shape."""
    o = np.empty_like(x)
    f = np.asfortranarray(x)
    return {
        "C in, C out": (x, o),
        "x.T in, out=o.T": (x.T, o.T),
        "F in, F out": (f, np.empty_like(f)),
        "x[:, ::-1] in and out": (x[:, ::-1], o[:, ::-1]),
        "x[:, ::-1] in, C out": (x[:, ::-1], np.empty_like(x)),
        "x[::-1, ::-1] in and out": (x[::-1, ::-1], o[::-1, ::-1]),  # one reversed run
        "x.T in, C out": (x.T, np.empty(x.T.shape, x.dtype)),
        "C in, no out": (x, None),
        "x.T in, no out": (x.T, None),
        "F in, no out": (f, None),
        "x[:, ::-1] in, no out": (x[:, ::-1], None),
        "10 elements C, no out": (x[0, :10].copy(), None),  # the call cost
    }


def layout_calls(np: Any, xin: Any, out: Any, a: float) -> dict[str, Callable[[], object]]:
    if out is None:  # both results in xin's memory order (NumPy's K)
        return {
            "leaky": lambda: leaky_relu(xin, a, threads=1),
            "np.multiply": lambda: np.multiply(xin, a),
        }
    return {
        "leaky": lambda: leaky_relu(xin, a, out=out, threads=1),
        "np.multiply": lambda: np.multiply(xin, a, out=out),
    }


def bench_layouts(np: Any, side: int, repeats: int, budget: float) -> list[dict[str, Any]]:
    """Transposed, F-ordered and reversed operands next to C order and np.multiply
    (the same layouts, a ufunc of the same traffic); in-place rows use alpha = 1.
    leaky runs with threads=1, as np.multiply does: the rows compare how each
    walks a layout, not the thread pool."""
    rows: list[dict[str, Any]] = []
    for dtype in ("float64", "float32"):
        x = np.random.default_rng(2).standard_normal((side, side)).astype(dtype)
        cases = layout_cases(np, x)
        cases["x.T in place"] = (x.T, x.T)
        for name, (xin, out) in cases.items():
            calls = layout_calls(np, xin, out, 1.0 if xin is out else ALPHA)
            times = side_by_side(calls, repeats, budget)
            rows.append({"dtype": dtype, "side": side, "layout": name, "seconds": times})
        base = next(r for r in rows if r["dtype"] == dtype and r["layout"] == "C in, C out")
        for r in rows:
            if r["dtype"] == dtype:
                r["vs_c"] = r["seconds"]["leaky"] / base["seconds"]["leaky"]
                r["vs_np"] = r["seconds"]["leaky"] / r["seconds"]["np.multiply"]
                print(
                    f"  {dtype:8s} {side}x{side} {r['layout']:24s}"
                    f" leaky {fmt_time(r['seconds']['leaky']):>10s}"
                    f"  np.multiply {fmt_time(r['seconds']['np.multiply']):>10s}"
                    f"  leaky/C-order {r['vs_c']:5.2f}  leaky/np.multiply {r['vs_np']:5.2f}",
                    flush=True,
                )
    return rows


def layouts_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "### Layouts (time per call; ratios: lower is better)",
        "",
        "| dtype | shape | layout | leaky | np.multiply | leaky / C order | leaky / np.multiply |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r["seconds"]
        lines.append(
            f"| {r['dtype']} | {r['side']}x{r['side']} | {r['layout']} | "
            f"{fmt_time(t['leaky'])} | {fmt_time(t['np.multiply'])} | {r['vs_c']:.2f} | "
            f"{r['vs_np']:.2f} |"
        )
    return "\n".join(lines)


def reference(times: dict[str, float]) -> float:
    return next(t for n, t in times.items() if n.startswith("BW"))


def best_other(times: dict[str, float]) -> tuple[str, float]:
    others = {n: t for n, t in times.items() if n != "leaky" and not n.startswith("BW")}
    name = min(others, key=others.__getitem__)
    return name, others[name]


def print_array_row(row: dict[str, Any], flush: bool = False) -> None:
    t = row["seconds"]
    name, other = best_other(t)
    print(
        f"  {row['dtype']:8s} {row['size']:>11,d} {row['mode']:13s}"
        f" leaky {t['leaky'] * 1e6:11.2f} us  {row['bytes'] / t['leaky'] / 1e9:6.1f} GB/s"
        f"  x{other / t['leaky']:5.2f} vs {name:22s} {reference(t) / t['leaky']:5.2f} of BW",
        flush=flush,
    )


# ---------------------------------------------------------------- report


def markdown_tables(
    numbers: list[dict[str, Any]],
    arrays: list[dict[str, Any]],
    backward: list[dict[str, Any]],
    layouts: list[dict[str, Any]] | None = None,
) -> str:
    lines = [
        "### Numbers (time per call, ns; ratios: lower is better)",
        "",
        "| function | x | call | leaky | one-liner | abs(x) | leaky / one-liner | leaky / abs |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in numbers:
        lines.append(
            f"| {r['function']} | {r['x']} | `{r['form']}` | {r['leaky_ns']:.1f} | "
            f"{r['one_liner_ns']:.1f} | {r['abs_ns']:.1f} | {r['vs_one_liner']:.2f} | "
            f"{r['vs_abs']:.2f} |"
        )
    lines += [
        "",
        "### Arrays (leaky's time per call; speed-up over the fastest other "
        "contender; fraction of the copy bandwidth measured in the same run)",
        "",
    ]
    lines += [
        "| dtype | size | mode | leaky | GB/s | speed-up | fastest other | of BW |",
        "|---|---:|---|---:|---:|---:|---|---:|",
    ]
    for r in arrays:
        t = r["seconds"]
        name, other = best_other(t)
        lines.append(
            f"| {r['dtype']} | {r['size']:,} | {r['mode']} | {fmt_time(t['leaky'])} | "
            f"{r['bytes'] / t['leaky'] / 1e9:.1f} | {other / t['leaky']:.2f}x | "
            f"{name} | {reference(t) / t['leaky']:.2f} |"
        )
    if backward:
        lines += [
            "",
            "### Backward and gradient (speed-up over the fastest other)",
            "",
            "| dtype | size | leaky backward | vs torch backward | vs NumPy idiom | "
            "leaky grad | grad vs fastest other |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in backward:
            t = r["seconds"]
            torch_t = t.get("torch backward")
            grad_others = [
                v for k, v in t.items() if k in ("np.where(z > 0, 1, a)", "torch backward(ones)")
            ]
            lines.append(
                f"| {r['dtype']} | {r['size']:,} | {fmt_time(t['leaky backward'])} | "
                f"{(torch_t / t['leaky backward']) if torch_t else float('nan'):.2f}x | "
                f"{t['np.where(z > 0, g, g * a)'] / t['leaky backward']:.2f}x | "
                f"{fmt_time(t['leaky grad'])} | {min(grad_others) / t['leaky grad']:.2f}x |"
            )
    if layouts:
        lines += ["", layouts_table(layouts)]
    return "\n".join(lines)


def targets_summary(
    numbers: list[dict[str, Any]],
    arrays: list[dict[str, Any]],
    backward: list[dict[str, Any]],
    layouts: list[dict[str, Any]] | None = None,
) -> str:
    """Each speed target of the project, with the worst ratio this run measured."""
    rows: list[tuple[str, str, float, bool]] = []

    def add(target: str, measured: str, value: float, ok: bool) -> None:
        rows.append((target, measured, value, ok))

    for kind, picks in (("float", ("-1.5", "1.5")), ("int", ("3",))):
        sel = [r for r in numbers if r["x"] in picks]
        if not sel:
            continue
        worst = max(r["vs_one_liner"] for r in sel)
        add(
            f"numbers ({kind} x): time <= 0.5x the one-liner, every call form",
            "worst leaky / one-liner",
            worst,
            worst <= 0.5,
        )
        worst = max(r["vs_abs"] for r in sel)
        add(f"numbers ({kind} x): time <= 1.3x abs(x)", "worst leaky / abs", worst, worst <= 1.3)

    def speedups(
        rows_: list[dict[str, Any]], rival: Callable[[dict[str, float]], float]
    ) -> list[float]:
        return [rival(r["seconds"]) / r["seconds"]["leaky"] for r in rows_]

    def fastest_other(t: dict[str, float]) -> float:
        return best_other(t)[1]

    def torch_of(t: dict[str, float]) -> float:
        return next((v for k, v in t.items() if k.startswith("torch")), float("nan"))

    for mode in ("out-of-place", "out="):
        small = [r for r in arrays if r["mode"] == mode and r["size"] <= 10**4]
        sp = speedups(small, fastest_other)
        if sp:
            add(
                f"arrays <= 10^4, {mode}: >= 2.5x faster than NumPy and PyTorch",
                "worst speed-up",
                min(sp),
                min(sp) >= 2.5,
            )
    if any(k.startswith("torch") for r in arrays for k in r["seconds"]):
        for lo, hi, label in ((10**5, 10**6, "10^5..10^6"), (10**7, 10**9, ">= 10^7")):
            sp = speedups([r for r in arrays if lo <= r["size"] <= hi], torch_of)
            if sp:
                add(
                    f"arrays {label}: at least as fast as PyTorch (all modes)",
                    "worst speed-up over torch",
                    min(sp),
                    min(sp) >= 1.0,
                )
    bw = [reference(r["seconds"]) / r["seconds"]["leaky"] for r in arrays if r["size"] >= 10**7]
    if bw:
        add(
            "arrays >= 10^7: >= 90% of the copy bandwidth (all modes)",
            "worst fraction",
            min(bw),
            min(bw) >= 0.9,
        )
    by_key = {(r["dtype"], r["size"], r["mode"]): r["seconds"]["leaky"] for r in arrays}
    half = [
        t / by_key[("float32", size, mode)]
        for (dt, size, mode), t in by_key.items()
        if dt == "float16" and ("float32", size, mode) in by_key and size >= 10**4
    ]
    if half:
        add(
            "float16 time per element <= 2x float32 (sizes >= 10^4)",
            "worst float16 / float32",
            max(half),
            max(half) <= 2.0,
        )
    for name, rival in (
        ("torch backward", "torch backward"),
        ("NumPy idiom", "np.where(z > 0, g, g * a)"),
    ):
        for lo, hi, need in ((0, 10**4, 2.5), (10**5, 10**9, 1.0)):
            sp = [
                r["seconds"][rival] / r["seconds"]["leaky backward"]
                for r in backward
                if lo <= r["size"] <= hi and rival in r["seconds"]
            ]
            if sp:
                add(
                    f"backward {'<= 10^4' if hi == 10**4 else '>= 10^5'}: >= {need}x vs {name}",
                    "worst speed-up",
                    min(sp),
                    min(sp) >= need,
                )
    # transposed, F-ordered and reversed operands that agree with each other
    agreeing = [
        r
        for r in layouts or []
        if r["layout"]
        in ("x.T in, out=o.T", "F in, F out", "x[:, ::-1] in and out", "x.T in place")
    ]
    if agreeing:
        worst = max(r["vs_c"] for r in agreeing)
        add(
            "layouts (x.T, F order, reversed; in and out alike): <= 1.3x C order",
            "worst leaky / C order",
            worst,
            worst <= 1.3,
        )
    fresh = [r for r in layouts or [] if r["layout"].endswith("no out")]
    if fresh:
        worst = max(r["vs_np"] for r in fresh)
        add(
            "layouts, fresh results (issue 20): within 1.2x np.multiply on the same input",
            "worst leaky / np.multiply",
            worst,
            worst <= 1.2,
        )
    if layouts:
        worst = max(r["vs_np"] for r in layouts)
        add(
            "layouts (all rows): no slower than np.multiply on the same layout",
            "worst leaky / np.multiply",
            worst,
            worst <= 1.0,
        )
    lines = [
        "### Targets (worst case over dtypes, sizes and modes in this run)",
        "",
        "| target | measure | value | met |",
        "|---|---|---:|---|",
    ]
    lines += [f"| {t} | {m} | {v:.2f} | {'yes' if ok else '**no**'} |" for t, m, v, ok in rows]
    return "\n".join(lines)


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e3:.2f} ms"


def plot(arrays: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, mode in zip(axes, ("out-of-place", "in place"), strict=True):
        rows = [r for r in arrays if r["dtype"] == "float32" and r["mode"] == mode]
        if not rows:
            continue
        for name in rows[0]["seconds"]:
            sizes = [r["size"] for r in rows]
            gbps = [r["bytes"] / r["seconds"][name] / 1e9 for r in rows]
            style = "--" if name.startswith("BW") else "-"
            width = 2.5 if name == "leaky" else 1.2
            ax.plot(sizes, gbps, style, marker="o", markersize=3, linewidth=width, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("elements (float32)")
        ax.set_title(f"float32, {mode}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("GB/s (bytes read + written per second)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"leaky {leaky.__version__} ({leaky._leaky._kernels} kernels)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few sizes, short timings")
    parser.add_argument("--plot", help="write the throughput plot (needs matplotlib)")
    parser.add_argument("--json", help="write every timing as JSON")
    parser.add_argument("--markdown", help="write the ratio tables as Markdown")
    parser.add_argument(
        "--layouts-only", action="store_true", help="only the transposed/F/reversed rows"
    )
    args = parser.parse_args()

    if args.quick:
        sizes, repeats, budget, side = [10, 1000, 100_000], 3, 0.02, 300
    else:
        sizes, repeats, budget, side = [10**k for k in range(1, 9)], 7, 0.2, 2000
    np, torch, ne = optional("numpy"), optional("torch"), optional("numexpr")
    versions = {m.__name__: m.__version__ for m in (np, torch, ne) if m is not None}
    print(f"machine: {machine()}")
    print(f"contenders: {versions or 'none beside the one-liner (NumPy not installed)'}")
    if torch is not None:
        print(f"torch threads: {torch.get_num_threads()}")

    if args.layouts_only:
        if np is None:
            sys.exit("--layouts-only needs NumPy")
        print("layouts:")
        only = bench_layouts(np, side, repeats, budget)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(f"Machine: {machine()}; contenders: {versions}\n\n")
                f.write(targets_summary([], [], [], only) + "\n\n")
                f.write(layouts_table(only) + "\n")
        return
    print("numbers (ns per call):")
    numbers = bench_numbers(repeats * 3, budget / 10)
    for r in numbers:
        print(
            f"  {r['function']:16s} x={r['x']:5s} {r['form']:14s} leaky {r['leaky_ns']:6.1f}"
            f"  one-liner {r['one_liner_ns']:6.1f}  abs {r['abs_ns']:5.1f}"
            f"  -> {r['vs_one_liner']:.2f}x one-liner, {r['vs_abs']:.2f}x abs"
        )
    arrays: list[dict[str, Any]] = []
    backward: list[dict[str, Any]] = []
    layouts: list[dict[str, Any]] = []
    if np is None:
        print("arrays: skipped, NumPy is not installed")
    else:
        print("arrays:")
        dtypes = ["float32", "float64", "float16"]
        arrays = bench_arrays(np, torch, ne, sizes, dtypes, repeats, budget)
        print("backward and grad:")
        backward = bench_backward(np, torch, sizes, dtypes, repeats, budget)
        print("layouts (transposed, F-ordered, reversed):")
        layouts = bench_layouts(np, side, repeats, budget)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine(),
                    "versions": versions,
                    "numbers": numbers,
                    "arrays": arrays,
                    "backward": backward,
                    "layouts": layouts,
                },
                f,
                indent=1,
            )
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"Machine: {machine()}; contenders: {versions}\n\n")
            f.write(targets_summary(numbers, arrays, backward, layouts) + "\n\n")
            f.write(markdown_tables(numbers, arrays, backward, layouts) + "\n")
    if args.plot and arrays:
        plot(arrays, args.plot, machine())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
