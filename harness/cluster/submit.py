"""Submit an experiment to Slurm through submitit: one task per node, each running torchrun.

    python -m harness.submit experiments/fineweb_10b.py [--optim.lr 3e-4 ...] [--dry-run | --local]
    python -m harness.submit log/fineweb_10b --resume          # resubmit a stopped run
    python -m harness.submit experiments/shakespeare_lr_sweep.py   # a sweep: one job array, a run dir each
    python -m harness.submit --eval suite log/fineweb_10b [harness.eval options] [--cluster.field value ...]
    python -m harness.submit --eval suite log/fineweb_10b --after 1234          # once job 1234 has succeeded
    python -m harness.submit --eval suite log/fineweb_10b --every-checkpoint    # every kept checkpoint: a job array
    python -m harness.submit experiments/fineweb_10b.py --eval-after suite      # train, then score the final model

Everything that can be checked is checked before anything is queued. On the preemption or
time-limit signal (USR2, `cluster.signal_lead_s` before the kill) the workers save a checkpoint;
submitit then requeues the job, and the next start resumes from that checkpoint.
"""

import argparse
import glob
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import simple_parsing

from harness import records
from harness.cluster import branches, inputs
from harness.cluster.job import TorchrunJob, node_script, rendezvous_port, torchrun_command
from harness.cluster.nodes import table
from harness.cluster.slurm import accounting, head_node, job_fields, queue_state, queue_states, queued_job, slurm_time
from harness.cluster.triage import classify
from harness.cluster.triage import state as triage_state
from harness.eval import cli as eval_cli
from harness.eval import registry
from harness.model.sources import is_huggingface_dir
from harness.run_dir import RunDir, checkpoint_step, find_runs, list_checkpoints
from harness.spec import (
    Experiment,
    SpecError,
    describe,
    init_run_dir,
    load_experiment_file,
    parse_command,
    read_spec,
    resolve,
    spec_parser,
)
from harness.spec.cli import apply_overrides, override_parser

PROG = "python -m harness.submit"


# ----------------------------------------------------------------------------- checks before queueing


def slurm_partitions() -> list[str]:
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SpecError(f"sinfo failed: {out.stderr.strip()}")
    return [p.strip().rstrip("*") for p in out.stdout.split()]


def check_cluster(specs: list[Experiment]) -> None:
    if shutil.which("sbatch") is None:
        raise SpecError("sbatch not found: this is not a Slurm login node (use --local to run here, or --dry-run "
                        "to see the job)")
    known = slurm_partitions()
    for spec in specs:
        if spec.cluster.partition and spec.cluster.partition not in known:
            raise SpecError(f"cluster.partition: {spec.cluster.partition!r} is not a partition of this cluster "
                            f"(sinfo lists {', '.join(known)})")


# ----------------------------------------------------------------------------- the job


def slurm_parameters(spec: Experiment, after: str | None = None) -> dict:
    """The job's Slurm request, as submitit's SlurmExecutor.update_parameters takes it; with `after`, it waits
    for that job to succeed (afterok), and Slurm removes it if that can never happen (--kill-on-invalid-dep)."""
    c = spec.cluster
    params = dict(
        job_name=spec.name,  # what squeue shows
        nodes=c.nodes,
        ntasks_per_node=1,  # one torchrun per node; it starts one worker per GPU
        time=c.time_min,
        signal_delay_s=c.signal_lead_s,
        # One failed node task ends the step at once instead of leaving the others in a collective.
        srun_args=["--kill-on-bad-exit=1", *c.srun_container()],
        additional_parameters={"requeue" if c.requeue else "no-requeue": True,
                               **dict(kv.split("=", 1) if "=" in kv else (kv, True) for kv in c.sbatch_extra)},
        stderr_to_stdout=True,
    )
    if after:
        params |= {"dependency": f"afterok:{after}"}
        params["additional_parameters"]["kill-on-invalid-dep"] = "yes"
    optional = dict(gpus_per_node=c.gpus_per_node, cpus_per_task=c.cpus_per_task,
                    mem=f"{c.mem_gb}GB" if c.mem_gb else None, partition=c.partition, account=c.account,
                    qos=c.qos, constraint=c.constraint, exclusive=c.exclusive)
    return params | {k: v for k, v in optional.items() if v}


def sbatch_options(params: dict) -> list[str]:
    """`slurm_parameters` as the #SBATCH lines they become (for --dry-run, which needs no Slurm)."""
    lines = []
    for key, value in params.items():
        if key == "signal_delay_s":
            lines.append(f"#SBATCH --signal=USR2@{value}")
        elif key == "additional_parameters":
            lines += [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={v}" for k, v in value.items()]
        elif key not in ("srun_args", "stderr_to_stdout"):  # used on the srun line, and by submitit's logs
            lines.append(f"#SBATCH --{key.replace('_', '-')}" + ("" if value is True else f"={value}"))
    return lines


def eval_cost(spec: Experiment) -> str | None:
    """One line on what the spec's in-loop eval tasks cost against its training (None without tasks)."""
    e = spec.eval
    if not (e.tasks and e.tasks_every):
        return None
    c = registry.cost(e.tasks, e.tasks_limit, e.tasks_every, spec.train.batch_tokens)
    limit = f", first {e.tasks_limit:,} examples of each" if e.tasks_limit else ""
    return (f"eval.tasks {','.join(e.tasks)} every {e.tasks_every:,} steps{limit}: {c['tokens'] / 1e6:.2f}M forward "
            f"tokens per evaluation, {c['flops_share']:.1%} of the training FLOPs between evaluations; about "
            f"{c['time_share']:.1%} of the training time on a GPU (scoring at {registry.EVAL_MFU_RATIO:.0%} of the "
            "training MFU)")


def make_executor(spec: Experiment, folder: Path, after: str | None = None) -> "object":
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=spec.cluster.max_timeouts)
    executor.update_parameters(**slurm_parameters(spec, after), array_parallelism=spec.cluster.array_parallelism)
    return executor


def make_job(spec: Experiment) -> TorchrunJob:
    return TorchrunJob(["harness.train", spec.run_dir], os.getcwd(), spec.cluster, spec.train.max_restarts,
                       run_dir=spec.run_dir)


def submit(specs: list[Experiment], allow_changes: bool = False) -> list[str]:
    """Create or check each run directory, then submit one job (or one array for a sweep). A branch whose
    checkpoint is not written yet gets its run directory only: its trunk queues it when it writes it."""
    runs = [RunDir(spec.run_dir) for spec in specs]
    for spec, run in zip(specs, runs, strict=True):
        if (job := queued_job(run)) is not None:
            raise SpecError(f"{run.path} already has job {job} in the queue (scancel it first)")
        changes = init_run_dir(run, spec, allow="compatible" if allow_changes else "none")
        if run.checkpoint_dirs():
            print(f"{run.path}: continuing the existing run from its checkpoints"
                  + (f" (changed: {describe(changes)})" if changes else ""))
    ready = []
    for spec, run in zip(specs, runs, strict=True):
        if branches.pending(run, spec) == "waiting":
            source, step = branches.branch_point(spec)
            print(f"{spec.name}: a branch from step {step} of {source.path}: queued when that checkpoint is written "
                  f"(run dir {run.path})")
        else:
            ready.append((spec, run))
    specs, runs = [s for s, _ in ready], [r for _, r in ready]
    if not specs:
        return []
    # A sweep's array shares one submitit folder beside its runs.
    folder = runs[0].slurm if len(specs) == 1 else runs[0].path.parent / runs[0].slurm.name
    executor = make_executor(specs[0], folder)
    if len(specs) == 1:
        jobs = [executor.submit(make_job(specs[0]))]
    else:
        with executor.batch():  # one job array: a task per spec
            jobs = [executor.submit(make_job(s)) for s in specs]
    ids = []
    for spec, run, job in zip(specs, runs, jobs, strict=True):
        log = str(job.paths.stdout).replace("%t", "0")
        run.record_job(job_id=job.job_id, via="submitit", log=log, nodes=spec.cluster.nodes,
                       gpus_per_node=spec.cluster.gpus_per_node)
        ids.append(job.job_id)
        print(f"submitted {spec.name}: job {job.job_id}\n"
              f"  run dir : {spec.run_dir}\n  log     : {log}\n"
              f"  watch   : squeue -j {job.job_id.split('_')[0]}    python -m harness.status {spec.run_dir}\n"
              f"  tail    : tail -f {log}")
        if cost := eval_cost(spec):
            print(f"  {cost}")
    return ids


def dry_run(specs: list[Experiment]) -> None:
    """What would be submitted, on any machine: no Slurm, no submitit, nothing written. Data not yet
    prepared is named, with the command that prepares it."""
    for spec in specs:
        try:
            inputs.ready(spec, spec.cluster.world_size)
        except SpecError as e:
            problems = "\n".join(f"#   {line}" for line in str(e).splitlines())
            print(f"# ---- {spec.name}: not ready to submit:\n{problems}")
        if spec.branch_from:
            source, step = branches.branch_point(spec)
            print(f"# ---- {spec.name}: a branch from step {step} of {source.path}, queued when that checkpoint is "
                  "written (by its trunk, or by --resume --failed)")
        if cost := eval_cost(spec):
            print(f"# {cost}")
        print(f"# ---- {spec.name}: the sbatch options submitit is given (it adds its log paths and the line "
              "that starts the job)")
        print("\n".join(sbatch_options(slurm_parameters(spec))))
        if len(specs) > 1 and spec is specs[0]:  # a sweep is one job array, a task per spec
            print(f"#SBATCH --array=0-{len(specs) - 1}%{min(spec.cluster.array_parallelism, len(specs))}")
        port = f"<20000 + crc32(job id) % 20000, e.g. {rendezvous_port('1234')}>"
        cmd = make_job(spec).command(spec.cluster.nodes, "<first node>", "<job id>")
        cmd = [a.replace(f":{rendezvous_port('<job id>')}", f":{port}") for a in cmd]
        srun = " ".join(slurm_parameters(spec)["srun_args"])
        print(f"# ---- each of the {spec.cluster.nodes} node(s) runs (srun {srun}, one task per node):\n"
              f"{node_script(spec.cluster, cmd)}\n")


def init_from_batch_script(specs: list[Experiment]) -> None:
    """For sbatch/train.sh: check and create the run directory, record the job, and print the shell
    lines the script evaluates (the run directory and the command each node runs)."""
    if len(specs) != 1:
        raise SpecError(f"sbatch/train.sh runs one spec; the file defines {len(specs)}: add --sweep-index N")
    spec, run = specs[0], RunDir(specs[0].run_dir)
    init_run_dir(run, spec, allow="compatible")
    job_id = os.environ["SLURM_JOB_ID"]
    job = job_fields(job_id)
    # Every start of the job comes through here (a requeue reruns the script); the submission is Slurm's.
    run.record_job(job_id=job_id, via="sbatch", event="start", submitted_at=slurm_time(job.get("SubmitTime", "")),
                   log=job.get("StdOut"), nodes=spec.cluster.nodes,
                   gpus_per_node=int(os.environ.get("SLURM_GPUS_ON_NODE", 0)))
    # squeue then shows the experiment's name, as for harness.submit
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"JobName={spec.name}"], capture_output=True)
    node = make_job(spec).command(spec.cluster.nodes, head_node(), job_id)
    print(f"RUN_DIR={shlex.quote(spec.run_dir)}")
    print(f"NODE_SCRIPT={shlex.quote(node_script(spec.cluster, node))}")
    print(f"CONTAINER=({shlex.join(spec.cluster.srun_container())})")  # a bash array: srun's container options


def run_local(spec: Experiment) -> int:
    """The same job on this machine, without Slurm: one node, torchrun in the foreground."""
    init_run_dir(RunDir(spec.run_dir), spec, allow="compatible")
    cmd = torchrun_command(spec.cluster.nproc_per_node, spec.train.max_restarts, ["harness.train", spec.run_dir])
    script = node_script(spec.cluster, cmd)
    print(script, flush=True)
    return subprocess.call(["bash", "-c", script])


@dataclass
class EvalJobs:
    """Evaluation jobs of one run (or model): the spec whose cluster settings they use, where submitit keeps
    their files, and the `harness.eval` arguments of each (several: one job array)."""

    kind: str
    spec: Experiment
    folder: Path
    commands: list[list[str]]
    after: str | None = None  # a job that must succeed first (afterok)


def evaluated(run: RunDir) -> set[tuple[int, str]]:
    """(step, task) pairs the run's records hold an evaluation of a kept checkpoint for (`later` eval rows)."""
    return {(r["step"], r["task"]) for r in records.read(run) if r["kind"] == "eval" and r.get("later")}


def checkpoints_to_evaluate(run: RunDir, kind: str) -> list[Path]:
    """--every-checkpoint: every checkpoint still on disk that lacks an evaluation of some task of `kind`;
    says which steps are covered (keep-last-K removed the others) and which are skipped."""
    on_disk = list_checkpoints(run.checkpoints)
    if not on_disk:
        raise SpecError(f"{run.path}: no checkpoints on disk to evaluate")
    tasks, done = registry.expand([kind]), evaluated(run)
    todo = [c for c in on_disk if any((checkpoint_step(c), t) not in done for t in tasks)]
    steps = lambda paths: ", ".join(str(checkpoint_step(c)) for c in paths) or "none"  # noqa: E731
    print(f"{run.path}: checkpoints on disk at steps {steps(on_disk)} (the others were removed by checkpoint.keep); "
          f"{kind} still to score at steps {steps(todo)}")
    return todo


def plan_eval(kind: str, target: Path, rest: list[str], after: str | None = None,
              every_checkpoint: bool = False, base: Experiment | None = None) -> EvalJobs:
    """Evaluations on one node each: torchrun over `python -m harness.eval KIND TARGET [options]`, with the
    Slurm resources of the run that TARGET belongs to (or of `base`, a spec being submitted), changed by any
    --cluster.field given."""
    run = next((RunDir(d) for d in (target, *target.parents) if RunDir(d).exists() and not is_huggingface_dir(d)),
               None)
    base = base or (read_spec(run) if run else Experiment(name=f"eval-{target.name}"))
    overrides, eval_args = override_parser(f"{PROG} --eval", base).parse_known_args(rest)
    eval_cli.parser().parse_args([kind, str(target), *eval_args])  # a bad option fails here, before queueing
    spec = simple_parsing.replace(overrides.exp, {"name": f"eval-{base.name}", "cluster.nodes": 1})
    if every_checkpoint:
        if run is None or kind == "val-loss":
            raise SpecError("--every-checkpoint evaluates a run's checkpoints: give --eval TASK|suite and a run dir")
        targets = checkpoints_to_evaluate(run, kind)
    else:
        targets = [target]
    commands = [["harness.eval", kind, str(t), *eval_args] for t in targets]
    return EvalJobs(kind, spec, RunDir(run.path if run else target).eval_slurm, commands, after)


def eval_data_args(spec: Experiment) -> list[str]:
    """--eval-after's harness.eval options: the run's own eval data (eval.tasks_data), if it names one."""
    return ["--data", spec.eval.tasks_data] if spec.eval.tasks_data else []


def submit_eval(jobs: EvalJobs) -> list[str]:
    """Queue the evaluations (one job, or one array); the results go beside each evaluated checkpoint."""
    if not jobs.commands:
        print("nothing to evaluate")
        return []
    check_cluster([jobs.spec])
    executor = make_executor(jobs.spec, jobs.folder, jobs.after)
    make = lambda cmd: TorchrunJob(cmd, os.getcwd(), jobs.spec.cluster, 0)  # noqa: E731
    if len(jobs.commands) == 1:
        submitted = [executor.submit(make(jobs.commands[0]))]
    else:
        with executor.batch():  # one job array: a task per checkpoint
            submitted = [executor.submit(make(cmd)) for cmd in jobs.commands]
    for job, cmd in zip(submitted, jobs.commands, strict=True):
        wait = f" (after job {jobs.after} succeeds)" if jobs.after else ""
        print(f"submitted {jobs.kind} of {cmd[2]}: job {job.job_id}{wait}\n  log: "
              f"{str(job.paths.stdout).replace('%t', '0')}")
    print(f"  the results go to eval_{jobs.kind.replace('-', '_')}.json beside each evaluated checkpoint")
    return [job.job_id for job in submitted]


def dry_run_eval(jobs: EvalJobs) -> None:
    """What submit_eval would queue, on any machine."""
    if not jobs.commands:
        return print("# nothing to evaluate")
    print(f"# ---- {len(jobs.commands)} evaluation job(s){' (one array)' if len(jobs.commands) > 1 else ''}: the "
          "sbatch options submitit is given")
    print("\n".join(sbatch_options(slurm_parameters(jobs.spec, jobs.after))))
    for cmd in jobs.commands:
        print(f"# python -m {shlex.join(cmd)}")


def submit_preflight(spec: Experiment) -> list[dict]:
    """Only the preflight, on `cluster.nodes` nodes, now: a job that measures every node (matmul,
    memory, shard reads, all-reduce) and ends; its per-node table is printed here once it is done.
    What a researcher runs before committing a week of GPUs."""

    if problems := [f"cluster.{p}" for p in spec.cluster.check()]:  # the training settings do not matter here
        raise SpecError("\n".join(problems))
    check_cluster([spec])
    run = RunDir(Path(spec.run_dir).parent / "preflight" / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    spec = simple_parsing.replace(spec, {"name": f"preflight-{spec.name}", "run_dir": str(run.path),
                                         "cluster.time_min": 15,
                                         "cluster.signal_lead_s": min(spec.cluster.signal_lead_s, 60)})
    init_run_dir(run, spec)
    job = make_executor(spec, run.slurm).submit(TorchrunJob(["harness.cluster.health", spec.run_dir], os.getcwd(),
                                                            spec.cluster, 0))
    log = Path(str(job.paths.stdout).replace("%t", "0"))
    print(f"submitted the preflight of {spec.cluster.nodes} node(s): job {job.job_id}, log {log}; waiting for it",
          flush=True)
    while queue_state(job.job_id):
        time.sleep(2)
    rows = [r for r in records.read(run) if r["kind"] == "preflight"]
    if not rows:
        tail = log.read_text()[-3000:] if log.exists() else "(no log)"
        raise SpecError(f"the preflight job {job.job_id} ended without results; the end of its log {log}:\n{tail}")
    print(table(rows))
    print(f"(also in {run.metrics})")
    return rows


def resubmit_failed(targets: list[str]) -> list[str]:
    """`--resume --failed`: of the runs in `targets` (run directories, folders of them, sweep files,
    globs), resubmit those whose failure a resubmission can cure (node failure, exhausted time
    limits, preempted but not requeued, a dead rank); name the others with what they need. A run
    already queued or running, or finished, is left alone and named."""
    runs: dict[Path, RunDir] = {}
    for target in targets:
        paths = sorted(glob.glob(target)) or [target]
        for path in paths:
            if path.endswith(".py"):
                found = [RunDir(resolve(s).run_dir) for s in load_experiment_file(path)]
            else:
                found = find_runs([path])
            runs |= {r.path.resolve(): r for r in found}
    if not runs:
        raise SpecError(f"no run directories in {' '.join(targets)}")
    submitted = []
    jobs = {run.path: str(job["job_id"]) for run in runs.values() if (job := run.last_job())}
    queue = queue_states(list(jobs.values())) or {}  # Slurm asked once for all the runs (check_cluster: it answers)
    accounted = accounting([j for j in jobs.values() if j not in queue]) or {}
    for run in runs.values():
        name, job = run.path, jobs.get(run.path)
        if job in queue:
            print(f"{name}: job {job} is already queued or running: skipped")
            continue
        spec = read_spec(run)
        if (branch := branches.pending(run, spec)) is not None:  # a branch its trunk never queued
            print(f"{name}: {branches.explain(run, spec)}" if branch == "waiting" else
                  f"{name}: a branch never queued, and its checkpoint is written: submitting")
            submitted += submit([spec]) if branch == "due" else []
            continue
        failed = classify(run, None, accounted=(accounted.get(job) or [None])[-1])
        if failed is None:
            print(f"{name}: {triage_state(records.columns(run), None, run.last_job())}: nothing to do")
        elif not failed.curable:
            print(f"{name}: {failed.what}: not resubmitted; {failed.next_step}\n    ({failed.evidence[:200]})")
        else:
            print(f"{name}: {failed.what}: resubmitting")
            submitted += submit([read_spec(run)], allow_changes=True)
    return submitted


def parser() -> argparse.ArgumentParser:
    p = spec_parser(PROG, __doc__)
    own = p.add_argument_group("harness.submit")
    own.add_argument("--dry-run", action="store_true",
                     help="print the sbatch options and the command each node runs; submit and create nothing")
    own.add_argument("--local", action="store_true", help="run the same job on this machine without Slurm (one node)")
    own.add_argument("--resume", action="store_true",
                     help="resubmit the run in RUN_DIR (changes that keep its checkpoints valid are allowed)")
    own.add_argument("--failed", action="store_true",
                     help="with --resume: resubmit the runs under the given directories, sweep files or globs whose "
                          "failure a resubmission cures; list the others with the change they need")
    own.add_argument("--allow-changes", action="store_true",
                     help="resubmit an existing run dir whose spec differs in fields that keep checkpoints valid")
    own.add_argument("--eval", choices=[*registry.names(), *registry.SUITES, "val-loss"], metavar="TASK|suite|val-loss",
                     help="submit an evaluation of TARGET (a run, checkpoint or HuggingFace GPT-2 directory); "
                          "harness.eval's options and --cluster.field overrides follow")
    own.add_argument("--after", metavar="JOB", help="with --eval: start only once job JOB has succeeded (afterok)")
    own.add_argument("--every-checkpoint", action="store_true",
                     help="with --eval: evaluate every checkpoint of the run still on disk (one job array), skipping "
                          "those already evaluated; each result becomes an eval row of its step")
    own.add_argument("--eval-after", metavar="TASK|suite",
                     help="with a training submission: also queue this evaluation of each run's final checkpoint, "
                          "to start when its training job has succeeded")
    own.add_argument("--preflight", action="store_true",
                     help="only check the nodes: a job runs the preflight on cluster.nodes nodes and its per-node "
                          "table is printed here (EXPERIMENT.py optional: its data, backend and thresholds)")
    own.add_argument("--init-run-dir", action="store_true",
                     help="(for sbatch/train.sh) validate, create the run dir, record the job, print shell lines")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    front = parser()
    try:
        args, rest = front.parse_known_args(argv)
        if args.eval:
            if not args.target:
                raise SpecError(f"usage: {PROG} --eval TASK|suite|val-loss TARGET [options] [--cluster.field value]")
            jobs = plan_eval(args.eval, Path(args.target), rest, args.after, args.every_checkpoint)
            return dry_run_eval(jobs) if args.dry_run else submit_eval(jobs)
        if args.after or args.every_checkpoint:
            raise SpecError("--after and --every-checkpoint go with --eval (a training submission takes --eval-after)")
        if args.eval_after and args.eval_after not in (*registry.names(), *registry.SUITES):
            raise SpecError(f"--eval-after: unknown task {args.eval_after!r} (python -m harness.eval --list)")
        if args.preflight:  # an experiment is optional: its data, backend and thresholds
            specs = parse_command(argv, PROG, front, multiple=True)[0] if args.target else [
                resolve(apply_overrides(PROG, Experiment(name="nodes"), rest))]
            if len(specs) > 1:
                raise SpecError("--preflight checks the nodes for one spec; pick one with --sweep-index N")
            return submit_preflight(specs[0])
        if args.failed:
            if not args.resume:
                raise SpecError("--failed goes with --resume: python -m harness.submit log/ --resume --failed")
            check_cluster([])
            return resubmit_failed([t for t in [args.target, *rest] if t])
        if args.resume and not (args.target and Path(args.target).is_dir()):
            raise SpecError(f"--resume takes a run directory: {PROG} RUN_DIR --resume")
        specs, args = parse_command(argv, PROG, front, multiple=True)
        if args.local and len(specs) > 1:
            raise SpecError("--local runs one spec; pick one with --sweep-index N")
        if args.local:  # one node: this machine
            specs = [simple_parsing.replace(specs[0], {"cluster.nodes": 1})]
        # A dry run shows the job even before the data is prepared; a branch's checkpoint may be yet to be written.
        specs = [inputs.ready(spec, spec.cluster.world_size, check_inputs=not args.dry_run, branch_may_wait=True)[0]
                 for spec in specs]
        branches.require(specs)
        run_dirs = [Path(s.run_dir).resolve() for s in specs]
        if len(set(run_dirs)) < len(run_dirs):
            raise SpecError("run_dir: the runs of a sweep need distinct run directories (do not override run_dir)")
        if args.local:
            sys.exit(run_local(specs[0]))
        if args.dry_run:
            dry_run(specs)
            for spec in specs if args.eval_after else []:
                dry_run_eval(plan_eval(args.eval_after, Path(spec.run_dir), eval_data_args(spec), "<training job id>",
                                       base=spec))
            return None
        if args.init_run_dir:
            return init_from_batch_script(specs)
        check_cluster(specs)
        ids = submit(specs, allow_changes=args.allow_changes or args.resume)
        if args.eval_after:  # each run's final checkpoint, once its training job has succeeded
            for spec, job in zip(specs, ids, strict=True):
                submit_eval(plan_eval(args.eval_after, Path(spec.run_dir), eval_data_args(spec), after=job, base=spec))
    except SpecError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
