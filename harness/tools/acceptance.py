"""The GPU acceptance command: first contact with a GPU machine, one command that passes or says what
is wrong.

    python -m harness.bench gpu [--hellaswag DATA] [--eval-data DIR] [--data DIR] [--out FILE.json]
    python -m harness.bench gpu --cpu     # the same checks, a tiny model on the CPU (the tests run it)

On one H100, with no network, in about 8 minutes:
  1. torch, CUDA, the GPU, and the attention kernel that SDPA actually runs (flash expected);
  2. GPT-2 124M training steps (T=1024, bf16, fused AdamW) without and with torch.compile: tokens/s and
     MFU against the target of 500K tokens/s, and the top kernels of one compiled step;
  3. harness.train on the default experiment's data (Shakespeare) with compile, bf16 and async
     checkpoints: a straight run, and a run SIGKILLed after a checkpoint and resumed; whether the
     resumed losses equal the straight run's bit for bit (deterministic kernels), else the largest
     difference;
  4. what micro_batch="auto" chooses for the 124M recipe (2**19 tokens per step), and its peak memory;
  5. HellaSwag on 1,000 examples of the data passed by path, with the time taken; the zero-shot suite (every
     task's full validation split, as lm-eval scores it) on the straight run's model, with examples/s, and the
     same on its HuggingFace export (harness.export), which must score exactly the same;
  6. one table, and one JSON file with every figure.
It exits 1 if a check fails (the table says which); the throughput target is reported, not enforced.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import distributed, records
from harness.atomic import write_text
from harness.run_dir import RunDir

TARGET_TOKENS_PER_S = 500_000  # GPT-2 124M on one H100 (~43% MFU); llm.c's public figure is ~468K
REPO = Path(__file__).resolve().parents[2]  # harness/tools/acceptance.py -> the repository


@dataclass
class Size:
    """How big each check is: the real thing on a GPU, a tiny model on the CPU."""

    model: dict  # ModelConfig fields
    seq_len: int
    micro_batches: tuple[int, ...]  # tried largest first for the throughput check (OOM: the next)
    steps: int  # timed training steps (after warm-up)
    train_micro_batch: int  # for the train/kill/resume runs: one pass per step
    train_steps: int
    checkpoint_every: int
    compile_train: bool
    hellaswag_limit: int
    suite_limit: int  # examples of each task of the zero-shot suite (0: all)


GPU = Size(dict(preset="gpt2"), 1024, (64, 32, 16), 20, 16, 30, 10, True, 1000, 0)
CPU = Size(dict(preset=None, n_layer=2, n_head=2, n_embd=64, block_size=64), 64, (4,), 2, 8, 12, 4, False, 16, 4)


def run(args: argparse.Namespace) -> dict:
    t0 = time.time()
    on_gpu = torch.cuda.is_available() and not args.cpu
    size = GPU if on_gpu else CPU
    device = torch.device("cuda" if on_gpu else "cpu")
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out: dict = {"mode": "gpu" if on_gpu else "cpu (tiny model)", "environment": environment(device, size)}
    problems: list[str] = []
    if on_gpu and out["environment"]["sdpa_kernel"] != "flash":
        problems.append(f"SDPA runs {out['environment']['sdpa_kernel']}, not flash attention")
    out["throughput"] = throughput(device, size)
    work = Path(tempfile.mkdtemp(prefix="harness-acceptance-"))
    try:
        data = Path(args.data) if args.data else prepare_shakespeare(work)
        out["resume"] = train_kill_resume(work, data, size, on_gpu)
        if not out["resume"]["identical"]:
            problems.append(f"the resumed run differs from the straight one by up to {out['resume']['max_diff']:.3g}")
        out["auto_micro_batch"] = auto_micro_batch(device)
        if args.hellaswag:
            out["hellaswag"] = hellaswag(work / "straight", args.hellaswag, size.hellaswag_limit, device)
        else:
            out["hellaswag"] = {"skipped": "no --hellaswag DATA given"}
        out["suite"] = suite(work, args.eval_data, size.suite_limit, device) if args.eval_data else {
            "skipped": "no --eval-data DIR given"}
        if out["suite"].get("export_agrees") is False:
            problems.append("the export scores the suite differently from the run it came from")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["problems"] = problems
    out["seconds"] = round(time.time() - t0, 1)
    return out


# ----------------------------------------------------------------------------- 1. the machine


def environment(device: torch.device, size: Size) -> dict:
    from harness.tools.timing import machine

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, **machine()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_gb": round(props.total_memory / 1e9, 1)}
    env["sdpa_kernel"] = sdpa_kernel(device, size)
    return env


SDPA_KERNELS = {"flash": "flash", "efficient": "memory-efficient", "cudnn": "cudnn", "math": "math"}


def sdpa_kernel(device: torch.device, size: Size) -> str:
    """The attention kernel SDPA dispatches to for the model in training precision, as the profiler
    records it (the choice depends on dtype, head size, GPU and build: asking is the only sure way)."""
    from torch.profiler import ProfilerActivity, profile

    from harness.model.gpt import GPT, autocast
    from harness.spec import ModelConfig

    model = GPT(ModelConfig(**size.model)).to(device)
    x = torch.zeros(1, size.seq_len, dtype=torch.long, device=device)
    with profile(activities=[ProfilerActivity.CPU]) as prof, autocast(device, "auto"):
        model(x, x)[1].backward()
    names = {e.name for e in prof.events() if "scaled_dot_product" in e.name or "attention" in e.name}
    for key, kernel in SDPA_KERNELS.items():
        if any(key in n for n in names):
            return kernel
    return "unknown: " + ", ".join(sorted(names))


# ----------------------------------------------------------------------------- 2. throughput


def throughput(device: torch.device, size: Size) -> dict:
    """Training steps of the model at each micro-batch that fits, plain and compiled."""
    from harness.model.gpt import GPT, model_flops_utilisation, peak_flops
    from harness.spec import ModelConfig
    from harness.tools.timing import time_train_steps

    env = distributed.DistEnv(0, 0, 1, device, None)
    out = {}
    for compiled in (False, True):
        for micro_batch in size.micro_batches:
            torch.manual_seed(0)
            model = GPT(ModelConfig(**size.model)).to(device)
            args = argparse.Namespace(micro_batch=micro_batch, seq_len=size.seq_len, dtype="auto", compile=compiled,
                                      warmup=3, steps=size.steps)
            try:
                times = time_train_steps(model, args, env)
            except torch.cuda.OutOfMemoryError:
                del model
                torch.cuda.empty_cache()
                continue
            dt = sorted(times)[len(times) // 2]
            tok_s = micro_batch * size.seq_len / dt
            mfu = model_flops_utilisation(model.flops_per_token(size.seq_len), tok_s, peak_flops(device), 1)
            key = "compiled" if compiled else "eager"
            out[key] = {"micro_batch": micro_batch, "ms_per_step": round(dt * 1e3, 2), "tokens_per_s": round(tok_s),
                        "mfu": None if mfu is None else round(mfu, 4)}
            if compiled:
                out["top_kernels"] = top_kernels(model, args, env)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            break
    best = max((v["tokens_per_s"] for k, v in out.items() if k != "top_kernels"), default=0)
    out["target_tokens_per_s"] = TARGET_TOKENS_PER_S if device.type == "cuda" else None
    out["target_met"] = best >= TARGET_TOKENS_PER_S if device.type == "cuda" else None
    return out


def top_kernels(model: torch.nn.Module, args: argparse.Namespace, env: distributed.DistEnv, n: int = 10) -> list:
    """The most expensive kernels (GPU) or operators (CPU) of two more training steps, with their share."""
    from torch.profiler import ProfilerActivity, profile

    from harness.tools.timing import time_train_steps

    cuda = env.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        time_train_steps(model, argparse.Namespace(**vars(args) | {"warmup": 0, "steps": 2}), env)
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]

    def self_time(e: object) -> float:
        if cuda:
            return getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
        return e.self_cpu_time_total

    total = sum(self_time(e) for e in events) or 1
    top = sorted(events, key=self_time, reverse=True)[:n]
    return [{"name": e.key[:90], "share": round(self_time(e) / total, 4), "ms": round(self_time(e) / 2e3, 3)}
            for e in top]


# ----------------------------------------------------------------------------- 3. train, kill, resume


def prepare_shakespeare(work: Path) -> Path:
    from harness.data.prepare import prepare
    from harness.data.sources import shakespeare

    out = work / "shakespeare"
    prepare(shakespeare(), out, shard_tokens=10_000_000, workers=min(8, os.cpu_count() or 1))
    return out


def train_args(run_dir: Path, data: Path, size: Size, deterministic: bool) -> list[str]:
    """The default experiment, resized: harness.train's command line."""
    from harness.spec import ModelConfig

    shape = ModelConfig(**size.model).resolved()
    return ["experiments/shakespeare.py", "--run_dir", str(run_dir), "--data.dir", str(data),
            "--model.n_layer", str(shape.n_layer), "--model.n_head", str(shape.n_head), "--model.n_embd",
            str(shape.n_embd), "--model.block_size", str(shape.block_size),
            "--train.seq_len", str(size.seq_len), "--train.micro_batch", str(size.train_micro_batch),
            "--train.batch_tokens", str(size.train_micro_batch * size.seq_len), "--train.device", "auto",
            "--train.dtype", "auto", "--train.compile", str(size.compile_train).lower(),
            "--train.deterministic", str(deterministic).lower(), "--schedule.steps", str(size.train_steps),
            "--schedule.warmup", "3", "--checkpoint.every", str(size.checkpoint_every), "--checkpoint.async_save",
            "true", "--eval.val_every", "0", "--eval.sample_every", "0", "--log.wandb", "disabled"]


def train(args: list[str], log: Path, kill_at_step: int = 0) -> int:
    """harness.train as its own process group; with kill_at_step, SIGKILLed (all of it, as a node
    failure would) once it has passed that step and committed a checkpoint before it."""
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "harness.train", *args], cwd=REPO, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    run = RunDir(args[args.index("--run_dir") + 1])
    while kill_at_step and proc.poll() is None:
        steps = [r["step"] for r in records.read(run) if r["kind"] == "train"]
        if steps and steps[-1] >= kill_at_step and run.checkpoint_dirs():
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return proc.wait()


def train_kill_resume(work: Path, data: Path, size: Size, on_gpu: bool) -> dict:
    kill_at = size.checkpoint_every + size.checkpoint_every // 2
    reason = None
    for deterministic in (True, False):
        straight, killed = work / "straight", work / "killed"
        for d in (straight, killed):
            shutil.rmtree(d, ignore_errors=True)
        t0 = time.time()
        rc = train(train_args(straight, data, size, deterministic), work / "straight.log")
        seconds = time.time() - t0
        if rc != 0:
            log = (work / "straight.log").read_text()
            if deterministic and "deterministic" in log:  # a kernel without a deterministic version
                reason = next((line for line in log.splitlines() if "deterministic" in line), "")
                continue
            raise RuntimeError(f"harness.train failed (exit {rc}):\n{log[-3000:]}")
        train(train_args(killed, data, size, deterministic), work / "killed.log", kill_at_step=kill_at)
        rc = train(train_args(killed, data, size, deterministic), work / "killed.log")
        if rc != 0:
            raise RuntimeError(f"the resumed harness.train failed (exit {rc}):\n"
                               f"{(work / 'killed.log').read_text()[-3000:]}")
        a = {r["step"]: r["loss"] for r in records.read(RunDir(straight)) if r["kind"] == "train"}
        rows = records.read(RunDir(killed))
        resumed = {r["step"]: r["loss"] for r in rows if r["kind"] == "train" and r["restart"] == 1}
        start = [r for r in rows if r["kind"] == "start"][-1]
        diffs = [abs(a[s] - resumed[s]) for s in resumed]
        return {"deterministic": deterministic, "not_deterministic_because": reason,
                "steps": size.train_steps, "killed_after_step": kill_at, "resumed_from_step": start["step"],
                "compared_steps": len(resumed), "identical": all(a[s] == resumed[s] for s in resumed),
                "max_diff": max(diffs, default=0.0), "straight_seconds": round(seconds, 1),
                "compile": size.compile_train, "async_checkpoints": True}
    raise AssertionError("unreachable: the non-deterministic attempt either returns or raises")


# ----------------------------------------------------------------------------- 4. auto micro-batch


def auto_micro_batch(device: torch.device) -> dict:
    """What micro_batch="auto" picks for GPT-2 124M at 2**19 tokens per step on this device."""
    from harness.model.gpt import GPT, autocast
    from harness.spec import ModelConfig
    from harness.train.auto_batch import choose_micro_batch

    env = distributed.DistEnv(0, 0, 1, device, None)
    model = GPT(ModelConfig(preset="gpt2")).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    chosen, _ = choose_micro_batch(model, 2**19, 2**19, 1024, env, autocast(device, "auto"))
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    del model
    return {"chosen": chosen, "probe_peak_memory_gb": None if peak is None else round(peak, 2),
            "note": None if device.type == "cuda" else "no GPU memory to probe: the CPU fallback"}


# ----------------------------------------------------------------------------- 5. HellaSwag


def hellaswag(run_dir: Path, data: str, limit: int, device: torch.device) -> dict:
    from harness.eval.hellaswag import evaluate_hellaswag
    from harness.model.gpt import autocast
    from harness.model.io import load_model

    model, info = load_model(run_dir, device)
    env = distributed.DistEnv(0, 0, 1, device, None)
    t0 = time.time()
    result = evaluate_hellaswag(model, data, limit, env, autocast(device, "auto"), batch_examples=32)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t0
    return result | {"seconds": round(seconds, 2), "examples_per_s": round(result["examples"] / seconds, 1),
                     "model": f"the straight run's step {info['step']}"}


def suite(work: Path, data: str, limit: int, device: torch.device) -> dict:
    """The zero-shot suite on the straight run's model, timed; then on its HuggingFace export, which must agree."""
    import importlib.util

    from harness.eval.registry import SUITES
    from harness.eval.suite import average, score_tasks
    from harness.model.gpt import autocast
    from harness.model.io import load_model

    env = distributed.DistEnv(0, 0, 1, device, None)
    model, info = load_model(work / "straight", device)
    t0 = time.time()
    tasks = score_tasks(model, list(SUITES["suite"]), data, limit, env, autocast(device, "auto"), 64)
    seconds = time.time() - t0
    n = sum(t["examples"] for t in tasks.values())
    out = {"examples": n, "seconds": round(seconds, 2), "examples_per_s": round(n / seconds, 1),
           "average": average(tasks), "tasks": {k: v["headline"] for k, v in tasks.items()},
           "model": f"the straight run's step {info['step']}"}
    if importlib.util.find_spec("transformers") and importlib.util.find_spec("blobfile"):
        from harness.tools.export import export

        export(work / "straight", work / "hf")
        again = score_tasks(load_model(work / "hf", device)[0], list(tasks), data, limit, env,
                            autocast(device, "auto"), 64)
        out["export_agrees"] = all(again[k]["acc"] == v["acc"] and again[k]["acc_norm"] == v["acc_norm"]
                                   for k, v in tasks.items())
    return out


# ----------------------------------------------------------------------------- 6. the report


def table(out: dict) -> str:
    env, tp, rs, auto, hs = (out[k] for k in ("environment", "throughput", "resume", "auto_micro_batch", "hellaswag"))
    lines = [("mode", out["mode"]),
             ("device", env.get("gpu") or env["device"]),
             ("torch / CUDA", f"{env['torch']} / {env['cuda']}"),
             ("SDPA kernel", env["sdpa_kernel"])]
    for key in ("eager", "compiled"):
        if key in tp:
            t = tp[key]
            mfu = "" if t["mfu"] is None else f", MFU {t['mfu']:.1%}"
            lines.append((f"train step, {key}", f"{t['tokens_per_s']:,} tokens/s ({t['ms_per_step']} ms at micro-batch "
                                                 f"{t['micro_batch']}{mfu})"))
    if tp["target_tokens_per_s"]:
        lines.append(("target", f"{tp['target_tokens_per_s']:,} tokens/s: {'met' if tp['target_met'] else 'NOT met'}"))
    for k in tp.get("top_kernels", [])[:5]:
        lines.append(("  kernel", f"{k['share']:6.1%}  {k['name']}"))
    how = "deterministic kernels" if rs["deterministic"] else f"non-deterministic ({rs['not_deterministic_because']})"
    same = "bit-identical" if rs["identical"] else f"max diff {rs['max_diff']:.3g}"
    lines.append(("kill and resume", f"{same} over {rs['compared_steps']} steps resumed from step "
                                     f"{rs['resumed_from_step']} ({how}, compile={rs['compile']}, async checkpoints)"))
    probe = f", probe peak {auto['probe_peak_memory_gb']} GB" if auto["probe_peak_memory_gb"] else f" ({auto['note']})"
    lines.append(("micro_batch=auto", f"{auto['chosen']}{probe}"))
    lines.append(("HellaSwag", hs.get("skipped") or f"{hs['examples']} examples in {hs['seconds']} s "
                                                     f"({hs['examples_per_s']}/s), acc_norm {hs['acc_norm']:.4f}"))
    su = out["suite"]
    agrees = {True: ", its export the same", False: ", its export DIFFERS", None: ""}[su.get("export_agrees")]
    lines.append(("zero-shot suite", su.get("skipped") or f"{su['examples']} examples in {su['seconds']} s "
                                                           f"({su['examples_per_s']}/s), average {su['average']:.4f}"
                                                           f"{agrees}"))
    lines.append(("verdict", "PASS" if not out["problems"] else "FAIL: " + "; ".join(out["problems"])))
    lines.append(("took", f"{out['seconds']} s"))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in lines)


def main(args: argparse.Namespace) -> dict:
    out = run(args)
    print(json.dumps(out))
    print(table(out))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    if out["problems"]:
        sys.exit(1)
    return out
