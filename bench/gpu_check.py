"""One bounded GPU check for a device session: CUDA kernel tests on the real GPU, the
published puzzle solved with both backends, and cpu vs cuda timings of
``evaluate_candidates`` / ``prefix_activations``; a markdown report in $OUT/gpu_report.md
(and the raw numbers in $OUT/gpu_report.json), rewritten after every section so a run cut
short still leaves what it measured.

Run through ``bench/gpu_check.sh`` (sets PYTHONPATH=src). ``--tiny``: small sizes only, for
a dry run under ``NUMBA_ENABLE_CUDASIM=1`` on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from dropnet._kernels import BlockWeights, backend  # noqa: E402

REPORT: dict = {"sections": {}, "errors": [], "started": time.strftime("%Y-%m-%d %H:%M:%S")}


# --------------------------------------------------------------------------- helpers
def say(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def out_dir() -> Path:
    folder = Path(os.environ.get("OUT") or Path(os.environ.get("TMPDIR", "/tmp"))
                  / "dropnet-gpu-check")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def section(name: str):
    """Decorator: run a section in try/except, record its result or its traceback."""
    def wrap(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            say(f"section {name}: start")
            try:
                result = fn(*args, **kwargs)
                status = "ok"
            except BaseException as exc:  # noqa: BLE001 (KeyboardInterrupt too: keep the report)
                result = {"error": f"{type(exc).__name__}: {exc}"}
                status = "failed"
                REPORT["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                if isinstance(exc, KeyboardInterrupt):
                    raise
            seconds = time.perf_counter() - t0
            REPORT["sections"][name] = {"status": status, "seconds": round(seconds, 2),
                                        "result": result}
            say(f"section {name}: {status} in {seconds:.1f} s")
            write_report()
            return result
        return run
    return wrap


def random_weights(rng, n: int, d: int, h: int, dtype, scale: float = 0.1) -> BlockWeights:
    """Small-gain blocks, so hundreds of them in a row stay finite."""
    return BlockWeights(rng.standard_normal((n, h, d)) * scale / np.sqrt(d),
                        rng.standard_normal((n, h)) * 0.1,
                        rng.standard_normal((n, d, h)) * scale / np.sqrt(h),
                        rng.standard_normal((n, d)) * 0.1, rng.standard_normal(d),
                        rng.standard_normal(1)).astype(dtype)


def timed(fn, repeats: int, budget: float) -> tuple[float, list[float], object]:
    """(median seconds, all times, last result) of ``fn()`` after one warm-up call; at most
    ``repeats`` timed calls, fewer when ``budget`` seconds run out (at least one)."""
    result = fn()
    times: list[float] = []
    t_end = time.perf_counter() + budget
    while len(times) < repeats and (not times or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times, result


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-30)
    return float(np.max(np.abs(a - b)) / scale) if a.size else 0.0


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version(), "machine": platform.machine()}
    for name in ("numpy", "numba", "numba-cuda", "llvmlite", "scipy", "click", "pytest",
                 "cuda-bindings", "torch"):
        try:
            out[name] = metadata.version(name)
        except Exception:
            out[name] = None
    return out


# --------------------------------------------------------------------------- sections
@section("environment")
def environment(args) -> dict:
    import numba

    cu = backend("cuda")
    info = {"versions": versions(), "simulator": cu.simulated(),
            "cuda_available": cu.is_available(),
            "numba_threads": numba.config.NUMBA_NUM_THREADS, "cpu_count": os.cpu_count(),
            "threads_per_block": cu.THREADS_PER_BLOCK}
    try:
        from numba import cuda

        info["numba_cuda_impl"] = getattr(cuda, "implementation", None)
        if cu.is_available() and not cu.simulated():
            dev = cuda.get_current_device()
            name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
            info["device"] = {"name": name, "compute_capability": list(dev.compute_capability),
                              "multiprocessors": dev.MULTIPROCESSOR_COUNT}
            free, total = cuda.current_context().get_memory_info()
            info["device"]["memory_free_gib"] = round(free / 2**30, 1)
            info["device"]["memory_total_gib"] = round(total / 2**30, 1)
    except Exception as exc:  # noqa: BLE001
        info["device_error"] = f"{type(exc).__name__}: {exc}"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.max.sm", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        info["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
    except Exception as exc:  # noqa: BLE001
        info["nvidia_smi"] = f"unavailable ({type(exc).__name__})"
    say(json.dumps(info))
    return info


@section("kernel_tests")
def kernel_tests(args, timeout: float) -> dict:
    """tests/_cuda_cases.py on the real GPU (or the simulator with --tiny under it)."""
    sim = backend("cuda").simulated()
    env = dict(os.environ, DROPNET_CUDA_CASES="sim" if sim else "gpu", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
           "--durations=5", str(ROOT / "tests" / "_cuda_cases.py")]
    if args.tiny:
        cmd += ["-k", "forward and shape1 or reports_its_mode"]
    say(" ".join(cmd) + f"  (timeout {timeout:.0f} s)")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=max(timeout, 10))
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout or ""
        output = output.decode() if isinstance(output, bytes) else output
        output, rc = output + f"\nTIMEOUT after {timeout:.0f} s", "timeout"
    print(output[-6000:], flush=True)
    lines = [line for line in output.splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    if rc == 0 and " passed" not in summary:
        rc = "nothing passed"
    if rc != 0:
        bad = [line for line in lines if line.startswith(("FAILED", "ERROR", "E "))]
        raise RuntimeError(f"pytest rc={rc}: {summary}\n" + "\n".join(bad[:40]))
    return {"rc": rc, "summary": summary, "mode": env["DROPNET_CUDA_CASES"]}


@section("planted_search")
def planted_search(args) -> dict:
    """The search (search.py, unchanged) on a planted network, started a few block moves
    away from the answer, with each backend: the same answer, and the wall time."""
    from dropnet.search import (Climber, adjacent_swaps, descend, local_moves,
                                output_exchanges, perturb)

    n, m, d, h = (4, 24, 6, 8) if args.tiny else (16, 256, 48, 96)
    rng = np.random.default_rng(11)
    w = random_weights(rng, n, d, h, np.float64, scale=0.4)
    x = rng.standard_normal((m, d))
    order = np.arange(n)
    target = backend("reference").network_output(x, w, order, order)
    start, _ = perturb(order, order, rng, 3)
    hoods = [adjacent_swaps, local_moves(4), output_exchanges(), local_moves(min(n, 16))]
    out = {"shape": {"n": n, "m": m, "d": d, "h": h}, "limit_s": args.solve_limit / 2}
    for kernels in ("cpu", "cuda"):
        for attempt in ("cold", "warm"):
            climber = Climber(w, x, target, kernels)
            t0 = time.perf_counter()
            state = descend(climber, climber.start(start, start), hoods,
                            deadline=time.perf_counter() + args.solve_limit / 2)
            seconds = time.perf_counter() - t0
            out[f"{kernels}_{attempt}"] = {
                "seconds": round(seconds, 3), "mse": state.sse / m, "rounds": climber.log.rounds,
                "candidates": climber.log.candidates, "block_evals": climber.log.block_evals,
                "found_planted": bool(np.array_equal(state.seq_in, order)
                                      and np.array_equal(state.seq_out, order)),
                "order": state.seq_in.tolist()}
            say(f"planted {kernels} {attempt}: {out[f'{kernels}_{attempt}']['seconds']} s, "
                f"mse {state.sse / m:.3g}, rounds {climber.log.rounds}")
    out["same_answer"] = out["cpu_warm"]["order"] == out["cuda_warm"]["order"]
    for key in ("cpu_cold", "cpu_warm", "cuda_cold", "cuda_warm"):
        out[key].pop("order")
    return out


def find_puzzle(args) -> Path | None:
    options = [Path(args.puzzle)] if args.puzzle else [
        ROOT.parent / "shared" / "puzzle", ROOT / "shared" / "puzzle", ROOT / ".gpu_puzzle"]
    for folder in options:
        if (folder / "pieces").is_dir() and (folder / "historical_data.csv").is_file():
            return folder
    return None


@section("puzzle")
def puzzle(args) -> dict:
    from dropnet.solve import solve

    folder = find_puzzle(args)
    if folder is None:
        return {"skipped": "no puzzle folder (../shared/puzzle, shared/puzzle, .gpu_puzzle "
                           "or --puzzle)"}
    if args.tiny and backend("cuda").simulated():
        return {"skipped": "the simulator would take hours on the puzzle (48 blocks, 10,000 rows)"}
    out = {"folder": str(folder)}
    for kernels, attempt in (("cpu", "cold"), ("cpu", "warm"), ("cuda", "cold"), ("cuda", "warm")):
        t0 = time.perf_counter()
        try:
            result = solve(folder, kernels=kernels, time_limit=args.solve_limit)
            out[f"{kernels}_{attempt}"] = {
                "seconds": round(time.perf_counter() - t0, 3), "certified": result.certified,
                "mse": result.mse, "rounds": result.search["rounds"],
                "candidates": result.search["candidates"],
                "timings": {k: round(v, 3) for k, v in result.timings.items()},
                "permutation": result.permutation}
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            out[f"{kernels}_{attempt}"] = {"error": f"{type(exc).__name__}: {exc}",
                                           "seconds": round(time.perf_counter() - t0, 3)}
        say(f"puzzle {kernels} {attempt}: " + json.dumps(
            {k: v for k, v in out[f"{kernels}_{attempt}"].items() if k != "permutation"}))
    perms = [out[key].get("permutation") for key in ("cpu_warm", "cuda_warm")]
    out["same_permutation"] = perms[0] is not None and perms[0] == perms[1]
    for key in ("cpu_cold", "cpu_warm", "cuda_cold", "cuda_warm"):
        out[key].pop("permutation", None)
    return out


@section("timings")
def timings(args, deadline: float) -> dict:
    """Medians of cpu vs cuda prefix_activations and evaluate_candidates (float32, as the
    search runs them) on random networks; configs whose predicted call time is over the cap
    (from the throughput seen on smaller ones) or past the deadline are skipped."""
    cpu, cu = backend("cpu"), backend("cuda")
    dtype = np.float32
    if args.tiny:
        blocks, rows, d, h, cap = (3, 4), (16, 40), 6, 8, 30.0
    else:
        blocks, rows, d, h, cap = (48, 96, 192, 384), (1000, 10_000, 100_000), 48, 96, args.call_cap
    cu.MAX_MIRROR_BYTES = max(cu.MAX_MIRROR_BYTES, int(3 * args.acts_gib * 2**30))
    acts_cap = args.acts_gib * 2**30
    configs = sorted(((n, m) for n in blocks for m in rows), key=lambda c: c[0] * c[1])
    rate: dict[tuple[str, str], float] = {}  # (backend, op) -> block-rows per second
    rows_out, compile_s = [], {}
    mods = (("cpu", cpu), ("cuda", cu))

    # warm-up: compile every kernel once on a small problem, timed apart
    rng = np.random.default_rng(0)
    w = random_weights(rng, 4, d, h, dtype)
    x = rng.standard_normal((64, d)).astype(dtype)
    seq = np.arange(4)
    for name, mod in mods:
        t0 = time.perf_counter()
        try:
            acts = mod.prefix_activations(x, w, seq, seq)
            mod.evaluate_candidates(acts, w, np.array([1]), seq[None], seq[None], np.zeros(64))
            compile_s[name] = round(time.perf_counter() - t0, 2)
        except Exception as exc:  # noqa: BLE001 (no GPU: time the cpu alone)
            traceback.print_exc()
            compile_s[name] = f"error: {type(exc).__name__}: {exc}"
            REPORT["errors"].append(f"timings: {name} warm-up: {type(exc).__name__}: {exc}")
    mods = tuple((name, mod) for name, mod in mods if not str(compile_s[name]).startswith("error"))
    say(f"compile / cache load: {compile_s}")

    def plan(name: str, op: str, work: int, acts_bytes: int) -> str | None:
        """Why this measurement is skipped, or None to run it."""
        left = deadline - time.perf_counter()
        guess = work / rate[(name, op)] if (name, op) in rate else None
        if acts_bytes > acts_cap:
            return f"skipped: acts {acts_bytes / 2**30:.1f} GiB > {args.acts_gib:g}"
        if guess is not None and guess > cap:
            return f"skipped: ~{guess:.0f} s a call"
        if left < 5 or (guess is not None and 3 * guess > left):
            return "skipped: deadline"
        return None

    def measure(row: dict, name: str, op: str, work: int, fn):
        try:
            left = deadline - time.perf_counter()
            med, times, result = timed(fn, args.repeats, budget=min(cap, left / 3))
            rate[(name, op)] = max(rate.get((name, op), 0.0), work / med)
            row[name], row[f"{name}_calls"] = med, len(times)
            return result
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            row[name] = f"error: {type(exc).__name__}: {str(exc)[:120]}"
            return None

    def finish(row: dict, results: dict) -> None:
        if isinstance(row.get("cpu"), float) and isinstance(row.get("cuda"), float):
            row["speedup"] = row["cpu"] / row["cuda"]
            if results.get("cpu") is not None and results.get("cuda") is not None:
                row["rel_diff"] = rel_diff(results["cuda"], results["cpu"])
        rows_out.append(row)
        say(json.dumps(row, default=str))
        REPORT["sections"]["timings"] = {"status": "running", "seconds": None,
                                         "result": {"compile_s": compile_s, "rows": rows_out}}
        write_report()

    for n, m in configs:
        acts_bytes = (n + 1) * m * d * np.dtype(dtype).itemsize
        lo = np.unique(np.linspace(0, n - 2, min(n - 1, args.candidates)).astype(np.int64))
        k = len(lo)
        work = {"prefix_activations": n * m, "evaluate_candidates": int(np.sum(n - lo)) * m}
        rng = np.random.default_rng(n * 1_000_003 + m)
        w = random_weights(rng, n, d, h, dtype)
        x = rng.standard_normal((m, d)).astype(dtype)
        target = rng.standard_normal(m)
        seq_in, seq_out = rng.permutation(n), rng.permutation(n)
        cand_in, cand_out = np.tile(seq_in, (k, 1)), np.tile(seq_out, (k, 1))
        cand_in[np.arange(k), lo], cand_in[np.arange(k), lo + 1] = seq_in[lo + 1], seq_in[lo]
        cand_out[np.arange(k), lo], cand_out[np.arange(k), lo + 1] = seq_out[lo + 1], seq_out[lo]

        op = "prefix_activations"
        row, results = {"n": n, "m": m, "k": "", "op": op, "block_rows": work[op]}, {}
        for name, mod in mods:
            row[name] = plan(name, op, work[op], acts_bytes)
            if row[name] is None:
                def forward(mod=mod):
                    return mod.prefix_activations(x, w, seq_in, seq_out)
                results[name] = measure(row, name, op, work[op], forward)
        if isinstance(row.get("cuda"), float):
            results.pop("cuda", None)
            acts_cu = cu.prefix_activations(x, w, seq_in, seq_out)  # the newest kept copy
            row["cuda_kernel_only"] = kernel_only_prefix(cu, acts_cu, w, seq_in, seq_out,
                                                         args.repeats)
            results["cuda"] = acts_cu
        finish(row, results)

        op = "evaluate_candidates"
        row = {"n": n, "m": m, "k": k, "op": op, "block_rows": work[op]}
        acts = {key: value for key, value in results.items() if value is not None}
        results = {}
        for name, mod in mods:
            row[name] = plan(name, op, work[op], acts_bytes)
            if row[name] is None:
                try:
                    if name not in acts:
                        acts[name] = mod.prefix_activations(x, w, seq_in, seq_out)
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    row[name] = f"error: {type(exc).__name__}: {str(exc)[:120]}"
                    continue
                results[name] = measure(row, name, op, work[op],
                                        lambda mod=mod, a=acts[name]: mod.evaluate_candidates(
                                            a, w, lo, cand_in, cand_out, target))
        finish(row, results)
        acts.clear()
        results.clear()
        cu.clear_device_cache()
    return {"compile_s": compile_s, "rows": rows_out, "dtype": np.dtype(dtype).name,
            "d": d, "h": h, "threads_per_block": cu.THREADS_PER_BLOCK}


def kernel_only_prefix(cu, acts, w, seq_in, seq_out, repeats: int):
    """Device time of the prefix kernel alone on the kept device copy (no copies back)."""
    if acts is None:
        return None
    try:
        from numba import cuda

        dev = cu.CACHE.mirror(acts)
        if dev is None:
            return None
        cu._run_prefix(dev, w, seq_in, seq_out, 0, acts)
        cuda.synchronize()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            cu._run_prefix(dev, w, seq_in, seq_out, 0, acts)
            cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"


# --------------------------------------------------------------------------- the report
def fmt_ms(value) -> str:
    if isinstance(value, float):
        return f"{value * 1e3:.2f}"
    return "—" if value is None else str(value)


def write_report() -> None:
    sections = REPORT["sections"]
    lines = ["# dropnet GPU check", "", f"Started {REPORT['started']}, written "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    env = sections.get("environment", {}).get("result") or {}
    if env:
        lines += ["## Environment", "", "```", json.dumps(env, indent=1, default=str), "```", ""]
    lines += ["## Sections", "", "| section | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {name} | {s['status']} | {s['seconds']} |" for name, s in sections.items()]
    lines.append("")
    tests = sections.get("kernel_tests")
    if tests:
        lines += ["## CUDA kernel tests", "", "```", json.dumps(tests["result"], indent=1), "```",
                  ""]
    for name in ("planted_search", "puzzle"):
        part = sections.get(name)
        if part:
            lines += [f"## {name.replace('_', ' ').capitalize()}", "", "```",
                      json.dumps(part["result"], indent=1, default=str), "```", ""]
    timing = (sections.get("timings") or {}).get("result") or {}
    if timing.get("rows"):
        lines += ["## cpu vs cuda (float32, medians after warm-up, ms a call)", "",
                  f"compile / cache load (s): {timing.get('compile_s')}; d={timing.get('d')}, "
                  f"h={timing.get('h')}, threads a block={timing.get('threads_per_block')}. "
                  "evaluate_candidates: k adjacent swaps at evenly spaced positions, each "
                  "rerunning the blocks from its position; block_rows = block evaluations x "
                  "rows. cuda times include the copies (acts back to the host for "
                  "prefix_activations); cuda kernel = the prefix kernel alone.", "",
                  "| op | n | m | k | block_rows | cpu ms | cuda ms | speedup | cuda kernel ms "
                  "| rel diff |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in timing["rows"]:
            speed = f"{row['speedup']:.1f}x" if "speedup" in row else "—"
            diff = f"{row['rel_diff']:.1e}" if "rel_diff" in row else "—"
            lines.append(f"| {row['op']} | {row['n']} | {row['m']} | {row['k']} | "
                         f"{row['block_rows']:.3g} | {fmt_ms(row.get('cpu'))} | "
                         f"{fmt_ms(row.get('cuda'))} | {speed} | "
                         f"{fmt_ms(row.get('cuda_kernel_only'))} | {diff} |")
        lines.append("")
    if REPORT["errors"]:
        lines += ["## Errors", ""] + [f"- {e}" for e in REPORT["errors"]] + [""]
    folder = out_dir()
    (folder / "gpu_report.md").write_text("\n".join(lines))
    (folder / "gpu_report.json").write_text(json.dumps(REPORT, indent=1, default=str))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes (simulator dry run)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for everything")
    parser.add_argument("--puzzle", default=None, help="puzzle folder (pieces/ + CSV)")
    parser.add_argument("--solve-limit", type=float, default=30.0,
                        help="seconds a puzzle solve (a planted search gets half)")
    parser.add_argument("--tests-timeout", type=float, default=180.0)
    parser.add_argument("--call-cap", type=float, default=4.0,
                        help="skip a timing whose predicted single call is longer (s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after warm-up")
    parser.add_argument("--candidates", type=int, default=64, help="k for evaluate_candidates")
    parser.add_argument("--acts-gib", type=float, default=4.0, help="largest acts array (GiB)")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    args = parser.parse_args(argv)
    if args.tiny and backend("cuda").simulated():
        backend("cuda").THREADS_PER_BLOCK = 8  # the simulator runs each thread in Python
    t_start = time.perf_counter()
    deadline = t_start + args.budget
    skip = set(filter(None, args.skip.split(",")))
    say(f"report in {out_dir()}; budget {args.budget:.0f} s; tiny={args.tiny}")
    environment(args)
    if "tests" not in skip:
        kernel_tests(args, timeout=min(args.tests_timeout, deadline - time.perf_counter() - 60))
    if "planted" not in skip:
        planted_search(args)
    if "puzzle" not in skip and deadline - time.perf_counter() > 4 * args.solve_limit + 60:
        puzzle(args)
    elif "puzzle" not in skip:
        REPORT["errors"].append("puzzle: skipped, not enough time left")
    if "timings" not in skip:
        timings(args, deadline=deadline - 10)
    write_report()
    say(f"done in {time.perf_counter() - t_start:.0f} s; {len(REPORT['errors'])} error(s); "
        f"report {out_dir() / 'gpu_report.md'}")
    return 1 if REPORT["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
