"""Submit an experiment to Slurm through submitit: one task per node, each running torchrun.

    python -m harness.submit experiments/fineweb_10b.py [--optim.lr 3e-4 ...] [--dry-run | --local]
    python -m harness.submit log/fineweb_10b --resume          # resubmit a stopped run
    python -m harness.submit experiments/shakespeare_lr_sweep.py   # a sweep: one job array, a run dir each

Everything that can be checked is checked before anything is queued. On the preemption or
time-limit signal (USR2, `cluster.signal_lead_s` before the kill) the workers save a checkpoint;
submitit then requeues the job, and the next start resumes from that checkpoint.
"""

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import config
from harness.checkpoint import is_huggingface_dir
from harness.cluster import TORCHRUN_ENV, rendezvous_port, torchrun_command
from harness.config import Experiment, SpecError
from harness.metrics import read_metrics
from harness.status import last_job, queue_state, run_state

OWN_FLAGS = ("--dry-run", "--local", "--resume", "--allow-changes", "--init-run-dir")


class TorchrunJob:
    """What each node's Slurm task runs: torchrun over a harness module (the trainer on a run
    directory, which resumes by itself, or an evaluation)."""

    def __init__(self, module_args: list[str], cwd: str, nproc_per_node: int, max_restarts: int, lead_s: int,
                 run_dir: str | None = None):
        self.module_args, self.cwd, self.run_dir = module_args, cwd, run_dir
        self.nproc_per_node, self.max_restarts, self.lead_s = nproc_per_node, max_restarts, lead_s
        self._proc: subprocess.Popen | None = None
        self._done = threading.Event()

    def __getstate__(self) -> dict:  # pickled by submitit at submission and again on requeue
        return {k: v for k, v in self.__dict__.items() if k not in ("_proc", "_done")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _proc=None, _done=threading.Event())

    def command(self, nnodes: int, head: str, job_id: str) -> list[str]:
        return torchrun_command(self.nproc_per_node, nnodes, head, job_id, self.max_restarts, self.module_args)

    def __call__(self) -> str:
        import submitit

        env = submitit.JobEnvironment()
        # SLURM_JOB_ID is unique per array task (env.job_id reads "123_4" there).
        cmd = self.command(env.num_nodes, env.hostnames[0], os.environ.get("SLURM_JOB_ID", env.job_id))
        print(f"[harness] node {env.node}/{env.num_nodes} ({env.hostname}): {shlex.join(cmd)}", flush=True)
        # torchrun's agent must survive USR2 (its default action is to die) and leave the signal to
        # the workers, which Slurm signals directly; an ignored signal stays ignored across exec,
        # and the trainer installs its own handler.
        self._proc = subprocess.Popen(cmd, cwd=self.cwd, env=os.environ | TORCHRUN_ENV,
                                      preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
        threading.Thread(target=lambda: (self._proc.wait(), self._done.set()), daemon=True).start()
        while not self._done.wait(timeout=1.0):  # a short wait keeps the main thread responsive to signals
            pass
        outcome = run_outcome(Path(self.cwd) / self.run_dir) if self.run_dir else None
        # A signal that reaches torchrun's agent too (SIGTERM) makes it exit non-zero even when the
        # workers saved and stopped cleanly: the run's own log says what happened.
        if self._proc.returncode != 0 and outcome != "preempted":
            where = f" and in {self.run_dir}/errors.jsonl" if self.run_dir else ""
            raise RuntimeError(f"torchrun exited with code {self._proc.returncode} on {env.hostname}; "
                               f"the failing rank's error is above{where}")
        job_id = os.environ.get("SLURM_JOB_ID")
        if outcome == "preempted" and env.global_rank == 0 and job_id:
            # The workers saved and stopped on a signal that no requeue follows (a SIGTERM from
            # `scancel --signal=TERM`, say): put the job back in the queue ourselves. If Slurm is
            # already requeuing or ending it, scontrol refuses and nothing changes.
            done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
            print(f"[harness] run stopped at a checkpoint; requeue: {done.stderr.strip() or 'done'}", flush=True)
        return outcome or "done"

    def checkpoint(self) -> "object":
        """Called by submitit on task 0 when USR2 arrives: the workers got the signal too and are
        saving; wait for them, then let submitit requeue this same job."""
        import submitit

        if self._proc is not None and not self._done.wait(timeout=max(10, self.lead_s - 15)):
            print("[harness] workers did not finish saving in time; the last periodic checkpoint will be used",
                  flush=True)
        return submitit.helpers.DelayedSubmission(self)


def run_outcome(run_dir: Path) -> str:
    """How the latest start of a run ended, from its metrics: finished, preempted, failed, ..."""
    return run_state(read_metrics(run_dir / "metrics.jsonl"))


# ----------------------------------------------------------------------------- checks before queueing


def slurm_partitions() -> list[str]:
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SpecError(f"sinfo failed: {out.stderr.strip()}")
    return [p.strip().rstrip("*") for p in out.stdout.split()]


def check_cluster(specs: list[Experiment]) -> None:
    if shutil.which("sbatch") is None:
        raise SpecError("sbatch not found: this is not a Slurm login node (use --local to run here)")
    known = slurm_partitions()
    for spec in specs:
        if spec.cluster.partition and spec.cluster.partition not in known:
            raise SpecError(f"cluster.partition: {spec.cluster.partition!r} is not a partition of this cluster "
                            f"(sinfo lists {', '.join(known)})")


def queued_job(run_dir: Path) -> str | None:
    """The id of a job of this run that is still pending or running, if any."""
    job = last_job(run_dir)
    return job["job_id"] if job and queue_state(str(job["job_id"])) else None


def record_job(run_dir: Path, **fields: object) -> None:
    with open(run_dir / "jobs.jsonl", "a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), **fields}) + "\n")


# ----------------------------------------------------------------------------- submitting


def make_executor(spec: Experiment, folder: Path) -> "object":
    import submitit

    c = spec.cluster
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=c.max_timeouts)
    params = dict(
        job_name=spec.name,  # what squeue shows
        nodes=c.nodes,
        ntasks_per_node=1,  # one torchrun per node; it starts one worker per GPU
        time=c.time_min,
        signal_delay_s=c.signal_lead_s,
        # One failed node task ends the step at once instead of leaving the others in a collective.
        srun_args=["--kill-on-bad-exit=1"],
        additional_parameters={"requeue": True, **dict(kv.split("=", 1) if "=" in kv else (kv, True)
                                                          for kv in c.sbatch_extra)},
        stderr_to_stdout=True,
    )
    optional = dict(gpus_per_node=c.gpus_per_node, cpus_per_task=c.cpus_per_task,
                    mem=f"{c.mem_gb}GB" if c.mem_gb else None, partition=c.partition, account=c.account,
                    qos=c.qos, constraint=c.constraint, exclusive=c.exclusive)
    params |= {k: v for k, v in optional.items() if v}
    executor.update_parameters(**params)
    return executor


def make_job(spec: Experiment) -> TorchrunJob:
    return TorchrunJob(["harness.train", spec.run_dir], os.getcwd(), spec.cluster.nproc_per_node,
                       spec.train.max_restarts, spec.cluster.signal_lead_s, run_dir=spec.run_dir)


def submit(specs: list[Experiment], allow_changes: bool = False) -> list[str]:
    """Create or check each run directory, then submit one job (or one array for a sweep)."""
    for spec in specs:
        run_dir = Path(spec.run_dir)
        if (job := queued_job(run_dir)) is not None:
            raise SpecError(f"{run_dir} already has job {job} in the queue (scancel it first)")
        changes = config.init_run_dir(spec, allow="compatible" if allow_changes else "none")
        if (run_dir / "checkpoints").exists():
            print(f"{run_dir}: continuing the existing run from its checkpoints"
                  + (f" (changed: {config.describe(changes)})" if changes else ""))
    folder = Path(specs[0].run_dir) / "slurm" if len(specs) == 1 else Path(specs[0].run_dir).parent / "slurm"
    executor = make_executor(specs[0], folder)
    if len(specs) == 1:
        jobs = [executor.submit(make_job(specs[0]))]
    else:
        with executor.batch():  # one job array: a task per spec
            jobs = [executor.submit(make_job(s)) for s in specs]
    ids = []
    for spec, job in zip(specs, jobs, strict=True):
        log = str(job.paths.stdout).replace("%t", "0")
        record_job(Path(spec.run_dir), job_id=job.job_id, via="submitit", log=log, nodes=spec.cluster.nodes,
                   gpus_per_node=spec.cluster.gpus_per_node)
        ids.append(job.job_id)
        print(f"submitted {spec.name}: job {job.job_id}\n"
              f"  run dir : {spec.run_dir}\n  log     : {log}\n"
              f"  watch   : squeue -j {job.job_id.split('_')[0]}    python -m harness.status {spec.run_dir}\n"
              f"  tail    : tail -f {log}")
    return ids


def dry_run(specs: list[Experiment]) -> None:
    for spec in specs:
        executor = make_executor(spec, Path(spec.run_dir) / "slurm")
        inner = executor._executor if hasattr(executor, "_executor") else executor
        # submitit's own rendering of the script it would pass to sbatch
        script = inner._make_submission_file_text(inner._submitit_command_str, "dry-run")
        print(f"# ---- {spec.name}: sbatch script\n{script}")
        cmd = make_job(spec).command(spec.cluster.nodes, "<first node>", "<job id>")
        cmd[cmd.index(next(a for a in cmd if a.startswith("--rdzv-endpoint")))] = \
            f"--rdzv-endpoint=<first node>:<20000 + crc32(job id) % 20000, e.g. {rendezvous_port('1234')}>"
        print(f"# ---- each of the {spec.cluster.nodes} node(s) runs:\n{shlex.join(cmd)}\n")


def init_from_batch_script(specs: list[Experiment]) -> None:
    """For sbatch/train.sh: check and create the run directory, record the job, print the path."""
    if len(specs) != 1:
        raise SpecError(f"sbatch/train.sh runs one spec; the file defines {len(specs)}: add --sweep-index N")
    spec = specs[0]
    config.init_run_dir(spec, allow="compatible")
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id:
        info = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
        log = next((f.split("=", 1)[1] for f in info.split() if f.startswith("StdOut=")), None)
        record_job(Path(spec.run_dir), job_id=job_id, via="sbatch", log=log, nodes=spec.cluster.nodes,
                   gpus_per_node=int(os.environ.get("SLURM_GPUS_ON_NODE", 0)))
        # squeue then shows the experiment's name, as for harness.submit
        subprocess.run(["scontrol", "update", f"JobId={job_id}", f"JobName={spec.name}"], capture_output=True)
    print(spec.run_dir)


def run_local(spec: Experiment) -> int:
    """The same job on this machine, without Slurm: one node, torchrun in the foreground."""
    config.init_run_dir(spec, allow="compatible")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={spec.cluster.nproc_per_node}", f"--max-restarts={spec.train.max_restarts}",
           "-m", "harness.train", spec.run_dir]
    print(shlex.join(cmd), flush=True)
    return subprocess.call(cmd, env=os.environ | TORCHRUN_ENV)


def submit_eval(argv: list[str]) -> None:
    """`--eval KIND TARGET [harness.eval options] [--cluster.field value ...]`: one node, torchrun over
    `python -m harness.eval`; the result is written beside the evaluated checkpoint as usual."""
    if len(argv) < 2 or argv[0] not in ("hellaswag", "val-loss"):
        raise SpecError("usage: python -m harness.submit --eval hellaswag|val-loss TARGET [options] "
                        "[--cluster.field value ...]")
    kind, target = argv[0], Path(argv[1])
    cluster_args = [a for i, a in enumerate(argv) if a.startswith("--cluster.")
                    or (i > 0 and argv[i - 1].startswith("--cluster."))]
    eval_args = [a for a in argv[2:] if a not in cluster_args]
    run_dir = next((d for d in (target, *target.parents) if (d / "config.json").exists()
                    and not is_huggingface_dir(d)), None)
    base = config.load_run_spec(run_dir) if run_dir else Experiment(name=f"eval-{target.name}")
    cli = config.override_parser("python -m harness.submit --eval", base)
    spec = dataclasses.replace(base, name=f"eval-{base.name}",
                               cluster=dataclasses.replace(cli.parse_args(cluster_args).exp.cluster, nodes=1))
    check_cluster([spec])
    folder = (run_dir or target) / "eval-slurm"
    executor = make_executor(spec, folder)
    job = executor.submit(TorchrunJob(["harness.eval", kind, str(target), *eval_args], os.getcwd(),
                                      spec.cluster.nproc_per_node, 0, spec.cluster.signal_lead_s))
    log = str(job.paths.stdout).replace("%t", "0")
    print(f"submitted {kind} of {target}: job {job.job_id}\n  log: {log}\n"
          f"  the result goes to eval_{kind.replace('-', '_')}.json beside the evaluated checkpoint")


FLAGS_HELP = """harness.submit's own flags:
  --dry-run        print the sbatch script and the torchrun command; submit and create nothing
  --local          run the same job on this machine without Slurm (one node)
  --resume         resubmit the run in RUN_DIR (changes that keep its checkpoints valid are allowed)
  --allow-changes  resubmit an existing run dir whose spec differs in fields that keep checkpoints valid
  --sweep-index N  one run of a sweep
  --eval hellaswag|val-loss TARGET [harness.eval options] [--cluster.field value ...]
                   submit an evaluation of a run, checkpoint or HuggingFace GPT-2 directory
  --init-run-dir   (for sbatch/train.sh) validate, create the run dir, record the job, print its path
"""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__ + "\n" + FLAGS_HELP + "\nSpec fields (--field value), as for harness.train:")
        config.override_parser("python -m harness.submit EXPERIMENT.py", Experiment()).print_help()
        return
    if argv and argv[0] == "--eval":
        try:
            return submit_eval(argv[1:])
        except SpecError as e:
            sys.exit(f"error: {e}")
    flags = {f for f in OWN_FLAGS if f in argv}
    rest = [a for a in argv if a not in OWN_FLAGS]
    if "--resume" in flags and not (rest and Path(rest[0]).is_dir()):
        sys.exit("error: --resume takes a run directory: python -m harness.submit RUN_DIR --resume")
    try:
        specs = config.parse_cli(rest, "python -m harness.submit", multiple=True)
        local = "--local" in flags
        if local and len(specs) > 1:
            raise SpecError("--local runs one spec; pick one with --sweep-index N")
        if local:  # one node: this machine
            specs = [dataclasses.replace(specs[0], cluster=dataclasses.replace(specs[0].cluster, nodes=1))]
        for spec in specs:
            config.validate(spec, spec.cluster.world_size)
        run_dirs = [Path(s.run_dir).resolve() for s in specs]
        if len(set(run_dirs)) < len(run_dirs):
            raise SpecError("run_dir: the runs of a sweep need distinct run directories (do not override run_dir)")
        if local:
            sys.exit(run_local(specs[0]))
        if "--dry-run" in flags:
            return dry_run(specs)
        if "--init-run-dir" in flags:
            return init_from_batch_script(specs)
        check_cluster(specs)
        submit(specs, allow_changes=bool(flags & {"--allow-changes", "--resume"}))
    except SpecError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
