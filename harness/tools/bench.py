"""Benchmarks that print figures: one JSON line, then a readable table. Not tests: nothing asserts speed.

    python -m harness.bench train --preset gpt2 --micro-batch 16 --seq-len 1024 [--compile] [--reference]
    torchrun --nproc-per-node 8 -m harness.bench train --preset gpt2 --micro-batch 64 --compile
    python -m harness.bench data [--data DIR]          # reader tokens/s per process
    python -m harness.bench tokenize [--workers N]     # tokenizer tokens/s per worker
    python -m harness.bench checkpoint --preset gpt2   # save/load seconds, time training is blocked
    python -m harness.bench hellaswag --data DIR --limit 500
    python -m harness.bench gpu [--hellaswag DATA] [--eval-data DIR] [--cpu]   # the GPU acceptance command
    python -m harness.bench prepare [--workers 2] [--pairs 3]   # harness.prepare against build-nanogpt's pipeline
    torchrun --nproc-per-node 8 -m harness.bench comm           # all-reduce bus bandwidth by size, as nccl-tests
    python -m harness.bench startup [--compile]                 # seconds to the first step: fresh, restarted, cold
    python -m harness.bench sweep [--seeds 50] [--rows 5000] [--code DIR]   # status, plots, report on 200 runs

Measured figures, with the machine and command, go in benchmarks/RESULTS.md.
"""

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F

from harness import distributed
from harness.model.gpt import GPT, autocast, model_flops_utilisation, peak_flops
from harness.spec import ModelConfig, OptimConfig
from harness.tools import acceptance
from harness.tools.timing import report, time_train_steps
from harness.train.optim import build_optimizer


def _model_config(args: argparse.Namespace) -> ModelConfig:
    if args.preset:
        return ModelConfig(preset=args.preset, block_size=max(1024, args.seq_len))
    return ModelConfig(preset=None, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                       block_size=args.seq_len)


# ----------------------------------------------------------------------------- train


class ReferenceGPT(nn.Module):
    """A straightforward GPT of the same shape: explicit masked softmax attention, nothing fused."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg = cfg.resolved()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        C = cfg.n_embd
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            ln1=nn.LayerNorm(C), qkv=nn.Linear(C, 3 * C), proj=nn.Linear(C, C),
            ln2=nn.LayerNorm(C), fc=nn.Linear(C, 4 * C), out=nn.Linear(4 * C, C),
        )) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[None, torch.Tensor]:
        B, T = idx.shape
        H, C = self.cfg.n_head, self.cfg.n_embd
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        mask = torch.tril(torch.ones(T, T, device=idx.device, dtype=torch.bool))
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            x = x + b["proj"]((att @ v).transpose(1, 2).reshape(B, T, C))
            x = x + b["out"](F.gelu(b["fc"](b["ln2"](x)), approximate="tanh"))
        logits = self.head(self.ln_f(x))
        return None, F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))


def bench_train(args: argparse.Namespace) -> dict:
    env = distributed.setup(args.device)
    torch.manual_seed(0)
    cfg = _model_config(args)
    model = GPT(cfg).to(env.device)
    dt = statistics.median(time_train_steps(model, args, env))
    tokens = args.micro_batch * args.seq_len * env.world_size
    tok_s = tokens / dt
    mfu = model_flops_utilisation(model.flops_per_token(args.seq_len), tok_s,
                                  peak_flops(env.device, args.peak_tflops), env.world_size)
    figures = {"model": args.preset or f"{cfg.n_layer}L-{cfg.n_head}H-{cfg.n_embd}C", "params": model.num_params(),
               "micro_batch": args.micro_batch, "seq_len": args.seq_len, "dtype": args.dtype, "compile": args.compile,
               "world_size": env.world_size, "ms_per_step": round(dt * 1e3, 2), "tokens_per_s": round(tok_s),
               "tokens_per_s_per_rank": round(tok_s / env.world_size), "mfu": None if mfu is None else round(mfu, 4)}
    rows = [("model", f"{figures['model']} ({model.num_params() / 1e6:.1f}M params)"),
            ("batch", f"{args.micro_batch} x {args.seq_len} x {env.world_size} ranks"),
            ("step", f"{dt * 1e3:.1f} ms (median of {args.steps})"), ("tokens/s", f"{tok_s:,.0f}"),
            ("MFU", "n/a (no peak for this device; --peak-tflops)" if mfu is None else f"{mfu:.1%}")]
    if args.reference and env.world_size == 1:
        torch.manual_seed(0)
        ref_dt = statistics.median(time_train_steps(ReferenceGPT(cfg).to(env.device), args, env))
        figures |= {"reference_ms_per_step": round(ref_dt * 1e3, 2), "reference_tokens_per_s": round(tokens / ref_dt),
                    "speedup_vs_reference": round(ref_dt / dt, 3)}
        rows += [("reference", f"{ref_dt * 1e3:.1f} ms/step, {tokens / ref_dt:,.0f} tokens/s (straightforward GPT)"),
                 ("speedup", f"{ref_dt / dt:.2f}x")]
    out = report("train", figures, rows) if env.is_main else figures
    del model
    distributed.teardown(env)
    return out


# ----------------------------------------------------------------------------- data and tokenizer


def _shakespeare_dir(path: str | None) -> Path:
    if path:
        return Path(path)
    from harness.data.prepare import prepare
    from harness.data.sources import shakespeare

    out = Path(tempfile.mkdtemp(prefix="bench-data-")) / "shakespeare"
    prepare(shakespeare(), out, shard_tokens=200_000, workers=0)
    return out


def bench_data(args: argparse.Namespace) -> dict:
    from harness.data.reader import ShardedTokenReader

    reader = ShardedTokenReader(_shakespeare_dir(args.data), "train", args.micro_batch, args.seq_len, shuffle=True)
    reader.next_batch()  # page the shards in: the figure is for page-cached shards
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        x, _ = reader.next_batch()
        n += x.numel()
    tok_s = n / (time.perf_counter() - t0)
    return report("data", {"tokens_per_s": round(tok_s), "micro_batch": args.micro_batch, "seq_len": args.seq_len},
                  [("reader", f"{tok_s / 1e6:,.1f}M tokens/s per process ({args.micro_batch}x{args.seq_len} batches)")])


def bench_tokenize(args: argparse.Namespace) -> dict:
    from harness.data.prepare import _tokenized, tokenize_documents
    from harness.data.sources import shakespeare

    docs = list(shakespeare().documents(0)) * args.repeat
    tokenize_documents(docs[:1])  # load the encoding outside the timing
    t0 = time.perf_counter()
    n = sum(len(flat) for flat, _ in map(tokenize_documents, [docs[i : i + 64] for i in range(0, len(docs), 64)]))
    one = n / (time.perf_counter() - t0)
    figures = {"tokens": n, "tokens_per_s_one_process": round(one)}
    rows = [("corpus", f"the Shakespeare plays x {args.repeat}: {n:,} tokens"),
            ("1 process", f"{one / 1e6:.2f}M tokens/s")]
    if args.workers:
        t0 = time.perf_counter()
        m = sum(len(flat) for flat, _ in _tokenized(iter(docs), args.workers))
        pool = m / (time.perf_counter() - t0)
        figures |= {"workers": args.workers, "tokens_per_s_pool": round(pool),
                    "tokens_per_s_per_worker": round(pool / args.workers)}
        rows += [(f"{args.workers} workers", f"{pool / 1e6:.2f}M tokens/s ({pool / args.workers / 1e6:.2f}M per worker,"
                                             " pool start-up included)")]
    return report("tokenize", figures, rows)


# ----------------------------------------------------------------------------- prepare against build-nanogpt


def plays_jsonl(path: Path, copies: int, chars: int = 4000) -> None:
    """The plays cut at line ends into documents of about `chars` characters, `copies` times over, as
    a jsonl of {"text": ...} rows: web-page-sized documents of real English."""
    from harness.data.sources import shakespeare

    with open(path, "w") as f:
        for _ in range(copies):
            for play in shakespeare().documents(0):
                doc = []
                for line in play.splitlines(keepends=True):
                    doc.append(line)
                    if sum(map(len, doc)) >= chars:
                        f.write(json.dumps({"text": "".join(doc)}) + "\n")
                        doc = []
                if doc:
                    f.write(json.dumps({"text": "".join(doc)}) + "\n")


_encoding = None


def _reference_tokenize(doc: dict) -> "object":
    global _encoding
    if _encoding is None:
        from harness.data.tokenizer import gpt2_encoding

        _encoding = gpt2_encoding()
    import numpy as np

    from harness.data.tokenizer import EOT

    tokens = [EOT]
    tokens.extend(_encoding.encode_ordinary(doc["text"]))
    return np.array(tokens).astype(np.uint16)


def reference_prepare(jsonl: str, out: str, workers: int, shard_tokens: int) -> int:
    """build-nanogpt's fineweb.py pipeline on a local jsonl, to be measured against and not used:
    multiprocessing.Pool.imap of EOT + encode_ordinary per document (chunksize 16) filling a
    preallocated uint16 shard buffer, shards saved as .npy. It reads the documents as harness.prepare
    reads a jsonl (the json module, line by line), so the two differ only in what they do with them."""
    import multiprocessing

    import numpy as np

    os.makedirs(out, exist_ok=True)
    shard, count, total = 0, 0, 0
    buf = np.empty((shard_tokens,), dtype=np.uint16)
    with open(jsonl, encoding="utf-8") as f, multiprocessing.Pool(workers) as pool:
        docs = (json.loads(line) for line in f if line.strip())
        for tokens in pool.imap(_reference_tokenize, docs, chunksize=16):
            total += len(tokens)
            if count + len(tokens) < shard_tokens:
                buf[count : count + len(tokens)] = tokens
                count += len(tokens)
            else:
                remainder = shard_tokens - count
                buf[count:] = tokens[:remainder]
                np.save(os.path.join(out, f"shard_{shard:06d}"), buf)
                shard += 1
                buf[: len(tokens) - remainder] = tokens[remainder:]
                count = len(tokens) - remainder
        if count:
            np.save(os.path.join(out, f"shard_{shard:06d}"), buf[:count])
    return total


def measure(cmd: list[str]) -> dict:
    """Wall time and peak memory of a command run in its own session, and how many of its processes
    were still alive (not zombies) half a second after it exited. Memory is the proportional set size
    summed over the command's processes (pages shared by forked workers counted once), sampled
    every 20 ms."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    peak, top = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [top, *top.children(recursive=True)]
            peak = max(peak, sum(p.memory_full_info().pss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{err[-3000:]}")
    time.sleep(0.5)  # a pool worker that outlives the command shows up in its session
    left = [p for p in psutil.process_iter(["status"]) if _session(p.pid) == proc.pid
            and p.info["status"] != psutil.STATUS_ZOMBIE]
    return {"seconds": seconds, "peak_mb": peak / 2**20, "left_running": len(left)}


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def bench_prepare(args: argparse.Namespace) -> dict:
    """Paired runs, alternating which goes first, on the same jsonl: harness.prepare --files against
    the reference; both must write the same number of tokens."""
    import numpy as np

    from harness.data.manifest import load_manifest

    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        jsonl = Path(args.files) if args.files else work / "plays.jsonl"
        if not args.files:
            plays_jsonl(jsonl, args.repeat)
        runs: dict[str, list[dict]] = {"harness": [], "reference": []}
        for i in range(args.pairs):
            out = work / f"out{i}"
            harness = [sys.executable, "-m", "harness.prepare", "--files", str(jsonl), "--out", str(out / "harness"),
                       "--workers", str(args.workers), "--val-fraction", "0"]
            reference = [sys.executable, "-c", "from harness.tools.bench import reference_prepare; "
                         f"print(reference_prepare({str(jsonl)!r}, {str(out / 'reference')!r}, {args.workers}, "
                         "100_000_000))"]
            for name, cmd in (("harness", harness), ("reference", reference))[:: 1 if i % 2 == 0 else -1]:
                runs[name].append(measure(cmd))
            tokens = sum(s["tokens"] for s in load_manifest(out / "harness")["splits"].values())
            reference_tokens = sum(len(np.load(f, mmap_mode="r")) for f in (out / "reference").glob("*.npy"))
            if tokens != reference_tokens:
                raise RuntimeError(f"harness.prepare wrote {tokens:,} tokens, the reference {reference_tokens:,}")
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {name: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_mb")}
              for name, rs in runs.items()}
    ratios = [h["seconds"] / r["seconds"] for h, r in zip(runs["harness"], runs["reference"], strict=True)]
    figures = {"workers": args.workers, "pairs": args.pairs, "tokens": tokens,
               "harness_seconds": round(median["harness"]["seconds"], 2),
               "reference_seconds": round(median["reference"]["seconds"], 2),
               "time_ratio": round(statistics.median(ratios), 3), "time_ratios": [round(x, 3) for x in ratios],
               "harness_peak_mb": round(median["harness"]["peak_mb"]),
               "reference_peak_mb": round(median["reference"]["peak_mb"]),
               "memory_ratio": round(median["harness"]["peak_mb"] / median["reference"]["peak_mb"], 3),
               "harness_left_running": max(r["left_running"] for r in runs["harness"]),
               "reference_left_running": max(r["left_running"] for r in runs["reference"])}
    rows = [("corpus", f"{args.files or f'the plays x {args.repeat}, ~4,000-character documents'}"),
            ("harness.prepare", f"{figures['harness_seconds']} s, peak {figures['harness_peak_mb']} MB "
                                f"(median of {args.pairs}, {args.workers} workers)"),
            ("build-nanogpt's", f"{figures['reference_seconds']} s, peak {figures['reference_peak_mb']} MB"),
            ("ratio", f"time {figures['time_ratio']}x (pairs: {figures['time_ratios']}), "
                      f"memory {figures['memory_ratio']}x"),
            ("left running", f"harness {figures['harness_left_running']}, reference "
                             f"{figures['reference_left_running']} processes after exit")]
    return report("prepare", figures, rows)


# ----------------------------------------------------------------------------- all-reduce


def bench_comm(args: argparse.Namespace) -> dict:
    """All-reduce bus bandwidth by message size over the run's backend, as nccl-tests prints it."""
    from harness.cluster.health import allreduce

    env = distributed.setup(args.device)
    if not env.distributed:
        sys.exit("harness.bench comm measures all-reduce between ranks: run it under torchrun (or srun) with "
                 "2 or more processes")
    sizes = tuple(args.min_bytes * 4**i for i in range(64) if args.min_bytes * 4**i <= args.max_bytes)
    measured = allreduce(env, sizes, iters=args.steps)
    figures = {"backend": env.backend, "world_size": env.world_size,
               # Four significant figures: a small message over a slow link is well under 0.001 GB/s.
               "sizes": [{"bytes": size, "us": round(m["seconds"] * 1e6, 1), "algbw_gbps": float(f"{m['algbw']:.4g}"),
                          "busbw_gbps": float(f"{m['busbw']:.4g}")} for size, m in measured.items()]}
    rows = [("", f"{'size (B)':>12} {'count':>10} {'type':>6} {'time (us)':>10} {'algbw (GB/s)':>13} "
                 f"{'busbw (GB/s)':>13}")]
    rows += [("", f"{r['bytes']:>12,} {r['bytes'] // 4:>10,} {'float':>6} {r['us']:>10,.1f} {r['algbw_gbps']:>13.4g} "
                  f"{r['busbw_gbps']:>13.4g}") for r in figures["sizes"]]
    rows.append(("", f"all-reduce (sum) over {env.world_size} ranks, {env.backend}; busbw = algbw x 2(n-1)/n"))
    out = report("comm", figures, rows) if env.is_main else figures
    distributed.teardown(env)
    return out


# ----------------------------------------------------------------------------- start-up


def bench_startup(args: argparse.Namespace) -> dict:
    """The seconds from a start's process to its first step, by phase (the start row's breakdown, then the
    first step: compilation with --compile), for a fresh run, its restart (as a requeue makes it), and that
    restart again with torch.compile's caches deleted: what the kept caches save a requeued job."""
    from harness import records
    from harness.run_dir import RunDir

    data = _shakespeare_dir(args.data)
    work = Path(tempfile.mkdtemp(prefix="harness-startup-"))
    run = RunDir(work / "run")
    base = ["experiments/shakespeare.py", "--run_dir", str(run.path), "--data.dir", str(data), "--model.n_layer",
            str(args.n_layer), "--model.n_head", str(args.n_head), "--model.n_embd", str(args.n_embd),
            "--train.micro_batch", str(args.micro_batch), "--train.seq_len", "128", "--train.batch_tokens",
            str(args.micro_batch * 128), "--schedule.warmup", "1", "--checkpoint.every", "2", "--eval.val_every", "0",
            "--eval.sample_every", "0", "--log.wandb", "disabled", "--train.compile", str(args.compile)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    starts = {}
    for name, steps, clear in (("fresh", 2, False), ("restart", 4, False), ("restart, caches deleted", 6, True)):
        if clear:
            shutil.rmtree(run.compile_cache, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "harness.train", *base, "--schedule.steps", str(steps)], check=True,
                       env=env, capture_output=True)
        rows = records.read(run)
        start = [r for r in rows if r["kind"] == "start"][-1]
        ready = next(r for r in rows if r["kind"] == "ready" and r["restart"] == start["restart"])
        before = sum(start["startup"].values())
        starts[name] = {**start["startup"], "first_step": round(ready["time"] - start["time"], 3),
                        "to_first_step": round(before + ready["time"] - start["time"], 3)}
    shutil.rmtree(work, ignore_errors=True)
    rows = [(f"{name}: to the first step", f"{s['to_first_step']:.2f} s (first step {s['first_step']:.2f} s; "
             + ", ".join(f"{k} {v:.2f}" for k, v in s.items() if k not in ("first_step", "to_first_step")) + ")")
            for name, s in starts.items()]
    return report("startup", {"compile": args.compile, "starts": starts}, rows)


# ----------------------------------------------------------------------------- checkpoint


def bench_checkpoint(args: argparse.Namespace) -> dict:
    from harness.run_dir import step_dir
    from harness.spec import CheckpointConfig
    from harness.train.checkpoint import Checkpointer, load, rng_state

    env = distributed.setup(args.device)
    model = GPT(_model_config(args)).to(env.device)
    opt = build_optimizer(model, OptimConfig(), env.device.type)
    model(torch.zeros(1, 8, dtype=torch.long, device=env.device), torch.zeros(1, 8, dtype=torch.long,
                                                                              device=env.device))[1].backward()
    opt.step()  # creates the AdamW moments: a real checkpoint's size
    root = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=args.dir))
    figures = {}
    try:
        for mode in ("sync", "async"):
            ckpt = Checkpointer(root / mode, CheckpointConfig(keep=2, async_save=mode == "async"), env)
            # Two saves: the first async one allocates its staging buffers, later ones reuse them.
            for step, label in ((1, f"{mode}_first"), (2, mode)):
                t0 = time.perf_counter()
                ckpt.save(step, model.state_dict(), opt.state_dict(), {"rng": rng_state(env.device)}, {"spec": {}})
                blocked = time.perf_counter() - t0
                ckpt.finish()
                total = time.perf_counter() - t0
                figures |= {f"{label}_blocked_s": round(blocked, 3), f"{label}_total_s": round(total, 3)}
        saved = step_dir(root / "sync", 2)
        size = sum(f.stat().st_size for f in saved.iterdir())
        t0 = time.perf_counter()
        state = load(saved, 0, 1)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        figures |= {"load_s": round(time.perf_counter() - t0, 3), "bytes": size, "params": model.num_params()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    where = args.dir or tempfile.gettempdir()
    rows = [("checkpoint", f"{size / 1e9:.2f} GB (model + AdamW, {model.num_params() / 1e6:.0f}M params) in {where}"),
            ("save", f"{figures['sync_total_s']:.2f} s (training blocked all that time)"),
            ("async save", f"training blocked {figures['async_blocked_s']:.2f} s "
                           f"({figures['async_first_blocked_s']:.2f} s the first time), "
                           f"written in {figures['async_total_s']:.2f} s"),
            ("load", f"{figures['load_s']:.2f} s (CRC check + torch.load + load_state_dict)")]
    out = report("checkpoint", figures, rows)
    distributed.teardown(env)
    return out


# ----------------------------------------------------------------------------- hellaswag


def bench_hellaswag(args: argparse.Namespace) -> dict:
    from harness.eval.hellaswag import load_examples, score_examples

    device = distributed.setup(args.device).device
    examples = load_examples(args.data, args.limit)
    model = GPT(_model_config(args)).to(device).eval()
    precision = autocast(device, args.dtype)
    score_examples(model, examples[: min(8, len(examples))], args.batch_examples, precision)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    score_examples(model, examples, args.batch_examples, precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    eps = len(examples) / dt
    return report("hellaswag", {"examples": len(examples), "seconds": round(dt, 2), "examples_per_s": round(eps, 1),
                                "model": args.preset or "free"},
                  [("examples", f"{len(examples)} in {dt:.1f} s: {eps:,.1f} examples/s"),
                   ("all 10,042", f"~{10042 / eps:,.0f} s on this device")])


# ----------------------------------------------------------------------------- a sweep of hundreds of runs


def bench_sweep(args: argparse.Namespace) -> dict:
    """harness.status, analysis.plots and analysis.report on 4 learning rates x `--seeds` runs of `--rows`
    train rows each (harness/tools/sweep.py), made from a real tiny run's rows, each command twice: wall
    time, peak resident set, the report's size. The sweep is kept in --dir and reused, so that another
    checkout of the harness (--code) can be timed on the same files."""
    from harness.run_dir import RunDir
    from harness.tools import sweep

    out = Path(args.dir or "log/bench/sweep")
    source = Path(args.source) if args.source else sweep.source_run(out, lambda: str(_shakespeare_dir(args.data)))
    runs, lrs = out / "runs", [1e-3, 3e-3, 1e-2, 3e-2]
    found = sorted(p.parent for p in runs.glob("*/config.json"))
    if len(found) != len(lrs) * args.seeds or args.fresh:
        shutil.rmtree(runs, ignore_errors=True)
        found = [r.path for r in sweep.make_sweep(source, runs, lrs, args.seeds, args.rows, args.val_every)]
    rows, size = sweep.sweep_size([RunDir(p) for p in found])
    figures = {"runs": len(found), "train_rows": rows, "metrics_mb": round(size / 1e6, 1), "code": args.code,
               **sweep.measure(runs, out, Path(args.code), ("first",) if args.once else ("first", "second"))}
    table = [("sweep", f"{len(found)} runs ({len(lrs)} lrs x {args.seeds} seeds), {rows:,} train rows, "
                       f"{figures['metrics_mb']} MB of metrics.jsonl (made from {source})")]
    for name in ("status", "plots", "report"):
        first, second = figures[f"{name}_first"], figures.get(f"{name}_second")
        again = f"; again: {second['seconds']} s, {second['peak_mb']} MB (load {second['load']})" if second else ""
        table.append((name, f"{first['seconds']} s, {first['peak_mb']} MB peak (load {first['load']}){again}"))
    table.append(("report page", f"{figures['report_mb']} MB"))
    return report("sweep", figures, table)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train", "data", "tokenize", "checkpoint", "hellaswag", "gpu", "prepare", "comm",
                                    "startup", "sweep"])
    p.add_argument("--preset", default=None, help="gpt2 | gpt2-medium | ... (default: a free size)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: known GPUs)")
    p.add_argument("--reference", action="store_true", help="also time a straightforward GPT of the same shape")
    p.add_argument("--data", default=None, help="data dir (data), or HellaSwag data (hellaswag)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--workers", type=int, default=0, help="tokenize: also time a pool of N workers")
    p.add_argument("--repeat", type=int, default=1, help="tokenize: copies of the corpus")
    p.add_argument("--dir", default=None, help="checkpoint: where to write (default: the temp dir); sweep: where the "
                                              "sweep is made and kept (default log/bench/sweep)")
    p.add_argument("--limit", type=int, default=200, help="hellaswag: examples")
    p.add_argument("--batch-examples", type=int, default=8)
    p.add_argument("--cpu", action="store_true", help="gpu: the checks with a tiny model on the CPU")
    p.add_argument("--hellaswag", default=None, help="gpu: HellaSwag data (jsonl or save_to_disk directory)")
    p.add_argument("--eval-data", default=None, help="gpu: the zero-shot suite's data (python -m harness.prepare eval)")
    p.add_argument("--out", default="log/bench/gpu.json", help="gpu: the JSON file of every figure")
    p.add_argument("--min-bytes", type=int, default=1024, help="comm: the smallest all-reduce")
    p.add_argument("--max-bytes", type=int, default=64 * 2**20, help="comm: the largest all-reduce (x4 between)")
    p.add_argument("--pairs", type=int, default=3, help="prepare: paired runs (the median ratio is reported)")
    p.add_argument("--files", default=None, help="prepare: a jsonl (default: the plays in ~4,000-character documents)")
    p.add_argument("--source", default=None, help="sweep: the real run to copy rows from (default: train a tiny one)")
    p.add_argument("--seeds", type=int, default=50, help="sweep: runs per learning rate (4 learning rates)")
    p.add_argument("--rows", type=int, default=5000, help="sweep: train rows per run")
    p.add_argument("--val-every", type=int, default=250, help="sweep: steps between val rows")
    p.add_argument("--code", default=".", help="sweep: the checkout of the harness whose commands are timed")
    p.add_argument("--fresh", action="store_true", help="sweep: make the sweep again even if --dir has one")
    p.add_argument("--once", action="store_true", help="sweep: each command once (a checkout with no cache)")
    args = p.parse_args(argv)
    benches = {"train": bench_train, "data": bench_data, "tokenize": bench_tokenize, "checkpoint": bench_checkpoint,
               "hellaswag": bench_hellaswag, "gpu": acceptance.main, "prepare": bench_prepare, "comm": bench_comm,
               "startup": bench_startup, "sweep": bench_sweep}
    benches[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
