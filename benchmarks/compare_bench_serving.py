"""Side by side: our client (tuner.bench.client) vs SGLang's own ``bench_serving`` on the same server and workload.

Run on the GPU machine with a server already up, e.g.::

    python benchmarks/compare_bench_serving.py --base-url http://127.0.0.1:30000 \\
        --model-path /models/Qwen3-8B --input-len 512 --output-len 128 --concurrency 1 16 64 \\
        --num-prompts 256 --out /tmp/compare

For every concurrency C it runs our client, then::

    python -m sglang.bench_serving --backend sglang-oai --dataset-name random-ids --random-range-ratio 1 \\
        --random-input-len 512 --random-output-len 128 --max-concurrency C --num-prompts N --seed S \\
        --output-file OUT/bench_serving_cC.jsonl --host H --port P --model M --tokenizer TOKENIZER_DIR \\
        [--tokenize-prompt] [--flush-cache] [--warmup-requests 1]

and prints, and writes as markdown and CSV under ``--out``, output tokens/s, median TTFT and median TPOT of both,
with the difference in % (ours relative to bench_serving).

How the two workloads line up (read from sglang/bench_serving.py and sglang/benchmark/datasets/random.py):

- bench_serving's ``random-ids`` draws lengths with ``np.random.randint(max(int(L * ratio), 1), L + 1)``; with
  ``--random-range-ratio 1`` every prompt is exactly ``--random-input-len`` ids and every output exactly
  ``--random-output-len`` tokens, as in our Level (``ignore_eos`` is on by default in both).
- Its ids are consecutive, ``(offset_i + i + j) % vocab_size`` with a random offset per prompt; ours are uniform
  random ids in [1000, 30000). Neither shares a prefix between prompts, so the radix cache sees the same (no)
  reuse; the token values themselves do not matter with ``ignore_eos`` and greedy decoding.
- By default (no ``--tokenize-prompt``) bench_serving DECODES the ids to text and the server re-tokenizes it,
  which changes the prompt length (typically by a few percent, and newer versions subtract the tokenizer's
  special tokens first); its reported input tokens are still the nominal length. With ``--tokenize-prompt``
  (newer SGLang) it sends the ids, as we do. This script passes ``--tokenize-prompt`` whenever the installed
  bench_serving has it, and reports which mode was used.
- Both send to ``/v1/completions`` with ``stream: true``, ``temperature 0`` and ``max_tokens = output len``;
  ``--seed`` is passed to both (the generators differ, so the seed fixes each side's own prompts, not the same
  ids on both sides).
- Metric definitions are bench_serving's on both sides: output tokens/s = sum(output tokens)/duration, TTFT to
  the first text chunk, TPOT = (e2e - ttft)/(output_len - 1) per request, medians over requests.
- Warm-up: ours sends ``--warmup-requests`` (default 1, like bench_serving) and POSTs /flush_cache before
  measuring; bench_serving gets ``--flush-cache`` when it supports it.

bench_serving appends one JSON line per run to ``--output-file``; we read the last line and accept the key
spellings of both the old (``total_output_tokens``) and new (``total_output``) formats.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = (
    ("output_throughput", "output tok/s", ("output_throughput",)),
    ("median_ttft_ms", "median TTFT ms", ("median_ttft_ms",)),
    ("median_tpot_ms", "median TPOT ms", ("median_tpot_ms",)),
    ("median_itl_ms", "median ITL ms", ("median_itl_ms",)),
    ("request_throughput", "req/s", ("request_throughput",)),
    ("completed", "completed", ("completed",)),
    ("total_output_tokens", "output tokens", ("total_output_tokens", "total_output")),
    ("total_input_tokens", "input tokens", ("total_input_tokens", "total_input")),
    ("concurrency_achieved", "achieved concurrency", ("concurrency",)),
)


def read_bench_serving_jsonl(path: str | Path) -> dict:
    """The last JSON object in a bench_serving --output-file (JSONL, one line appended per run)."""
    last = None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            last = obj
    if last is None:
        raise ValueError(f"{path}: no JSON result line")
    return last


def pick(d: dict, keys: tuple[str, ...]) -> float:
    for k in keys:
        if k in d and d[k] is not None:
            try:
                return float(d[k])
            except (TypeError, ValueError):
                pass
    return float("nan")


def pct_diff(ours: float, theirs: float) -> float:
    if theirs is None or ours is None or not math.isfinite(theirs) or not math.isfinite(ours) or theirs == 0:
        return float("nan")
    return (ours - theirs) / theirs * 100.0


def bench_serving_help(cmd: list[str]) -> str:
    try:
        return subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=180).stdout
    except Exception as e:
        print(f"warning: could not read bench_serving --help: {e}", file=sys.stderr)
        return ""


def run_ours(args, c: int, n: int) -> tuple[dict, str]:
    from tuner.bench.client import run_benchmark
    from tuner.bench.workload import Level, Workload

    wl = Workload(
        levels=(Level(concurrency=c, input_len=args.input_len, output_len=args.output_len, num_prompts=n),),
        endpoint="completions",
        prompt_kind="ids",
        seed=args.seed,
        warmup_requests=args.warmup_requests,
        flush_cache=True,
        request_timeout_s=args.request_timeout,
    )
    res = run_benchmark(args.base_url, args.model or args.model_path, wl)
    r = res.levels[0]
    d = {m: getattr(r, m) for m, _, _ in METRICS}
    return d, r.errors


def run_theirs(args, c: int, n: int, out_dir: Path, help_text: str) -> tuple[dict, list[str]]:
    u = urlparse(args.base_url)
    out_file = out_dir / f"bench_serving_c{c}.jsonl"
    out_file.unlink(missing_ok=True)
    cmd = [
        *args.bench_serving_cmd.split(),
        "--backend", "sglang-oai",
        "--dataset-name", "random-ids",
        "--random-range-ratio", "1",
        "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len),
        "--max-concurrency", str(c),
        "--num-prompts", str(n),
        "--seed", str(args.seed),
        "--output-file", str(out_file),
        "--host", u.hostname or "127.0.0.1",
        "--port", str(u.port or 80),
        "--model", args.model or args.model_path,
        "--tokenizer", args.model_path,
    ]  # fmt: skip
    if "--tokenize-prompt" in help_text and not args.text_prompts:
        cmd.append("--tokenize-prompt")
    if "--flush-cache" in help_text:
        cmd.append("--flush-cache")
    if "--warmup-requests" in help_text:
        cmd += ["--warmup-requests", str(args.warmup_requests)]
    cmd += args.bench_serving_arg or []
    print("$ " + " ".join(cmd), flush=True)
    log_path = out_dir / f"bench_serving_c{c}.log"
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(f"bench_serving exited with {rc}; log {log_path}:\n{tail}")
    d = read_bench_serving_jsonl(out_file)
    return {m: pick(d, keys) for m, _, keys in METRICS}, cmd


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:,.2f}" if abs(x) < 1e5 else f"{x:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model-path", required=True, help="tokenizer dir (also the model name unless --model)")
    ap.add_argument("--model", help="served model name sent in requests (default: --model-path)")
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--num-prompts", type=int, help="per concurrency (default max(4*C, 8), at least 16 for C=1)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warmup-requests", type=int, default=1)
    ap.add_argument("--request-timeout", type=float, default=600.0)
    ap.add_argument("--text-prompts", action="store_true", help="let bench_serving send decoded text prompts")
    ap.add_argument("--bench-serving-cmd", default=f"{sys.executable} -m sglang.bench_serving")
    ap.add_argument("--bench-serving-arg", action="append", help="extra argument for bench_serving (repeatable)")
    ap.add_argument("--out", default="compare_out")
    a = ap.parse_args()

    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    help_text = bench_serving_help(a.bench_serving_cmd.split())
    mode = "ids (--tokenize-prompt)" if "--tokenize-prompt" in help_text and not a.text_prompts else "decoded text"

    rows = []
    for c in a.concurrency:
        n = a.num_prompts or max(4 * c, 16 if c == 1 else 8)
        t = time.time()
        ours, errors = run_ours(a, c, n)
        print(f"[ours] C={c} N={n}: {ours['output_throughput']:.1f} tok/s ({time.time() - t:.0f} s)", flush=True)
        if errors:
            print(f"[ours] failures: {errors}", flush=True)
        theirs, _cmd = run_theirs(a, c, n, out_dir, help_text)
        print(f"[bench_serving] C={c}: {theirs['output_throughput']:.1f} tok/s", flush=True)
        for m, label, _ in METRICS:
            rows.append(
                {
                    "concurrency": c,
                    "num_prompts": n,
                    "metric": m,
                    "label": label,
                    "ours": ours[m],
                    "bench_serving": theirs[m],
                    "diff_pct": pct_diff(ours[m], theirs[m]),
                }
            )

    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_csv(out_dir / "compare.csv", index=False)
    lines = [
        f"# tuner client vs sglang.bench_serving ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"server {a.base_url}, model {a.model or a.model_path}, input {a.input_len} / output {a.output_len} tokens, "
        f"seed {a.seed}, bench_serving prompts: {mode}",
        "",
        "| C | N | metric | ours | bench_serving | diff % |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if r["metric"] not in ("output_throughput", "median_ttft_ms", "median_tpot_ms"):
            continue
        d = r["diff_pct"]
        lines.append(
            f"| {r['concurrency']} | {r['num_prompts']} | {r['label']} | {fmt(r['ours'])} | {fmt(r['bench_serving'])} "
            f"| {'n/a' if not math.isfinite(d) else f'{d:+.1f}'} |"
        )
    lines += ["", "All metrics (including input/output token counts) are in compare.csv.", ""]
    md = "\n".join(lines)
    (out_dir / "compare.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
