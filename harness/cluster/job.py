"""What every node of a job runs (torchrun over a harness module, after the spec's set-up lines), and what
a job does when its training step ends. Used by harness.submit (through submitit, which pickles
`TorchrunJob`) and by sbatch/train.sh. Imports no torch: a node's task starts in a fraction of a second.
"""

import os
import shlex
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

from harness import records
from harness.cluster.slurm import cancelled, hostnames, job_fields
from harness.cluster.triage import job_log
from harness.run_dir import RunDir
from harness.spec import ClusterConfig

# torchrun shares its rendezvous store with the workers by default but keeps no per-attempt keys in
# it (torch 2.13), so a worker group restarted after a failure can read the previous attempt's
# addresses and hang in init_process_group. With this set, each rendezvous round's rank-0 worker
# hosts a fresh store on a fresh port instead. Every launcher here sets it.
TORCHRUN_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def rendezvous_port(job_id: str) -> int:
    """A port for torchrun's c10d store derived from the job id: jobs sharing a node do not collide."""
    return 20000 + zlib.crc32(str(job_id).encode()) % 20000


def torchrun_command(nproc_per_node: int, max_restarts: int, module_args: list[str], nnodes: int = 1,
                     head_node: str | None = None, job_id: str | None = None) -> list[str]:
    """The command each node runs: torchrun over a harness module. With a head node, the c10d
    rendezvous lives there (a multi-node job); without one, a single node (`--standalone`)."""
    where = ["--standalone"] if head_node is None else [
        f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={head_node}:{rendezvous_port(job_id)}",
        f"--rdzv-id={job_id}"]
    return [
        sys.executable, "-m", "torch.distributed.run", *where,
        f"--nproc-per-node={nproc_per_node}",
        # A crashed or killed worker restarts the whole group from the last checkpoint, this many times.
        f"--max-restarts={max_restarts}",
        "-m", *module_args,
    ]


def node_script(cluster: ClusterConfig, command: list[str]) -> str:
    """The shell script each node task runs: the spec's set-up lines, its environment, then `command`
    in the shell's place (exec: signals reach it, and its exit status is the task's)."""
    lines = [*cluster.setup]
    lines += [f"export {kv.split('=', 1)[0]}={shlex.quote(kv.split('=', 1)[1])}" for kv in cluster.env]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in TORCHRUN_ENV.items()]
    return "\n".join([*lines, "exec " + shlex.join(command)])


# ----------------------------------------------------------------------------- when a job's step ends


def requeue_excluding(job_id: str, hosts: list[str], log_dir: Path) -> str:
    """Put the running job `job_id` back in the queue with `hosts` added to its excluded nodes.

    Slurm keeps ExcNodeList across requeues but lets it change only while a job is pending, and this
    one is running. So a helper job (one CPU, a minute) is submitted first: it retries the update
    every second until the job is back in the queue. A requeued job waits Slurm's cred_expire
    (120 s by default) before it may start again, so the helper, queued earlier, is scheduled first;
    if it is late, the job's next start finds itself on the node again and comes back here (after a
    few such starts the trainer gives up, saying how to set the exclusion by hand). Returns how the
    requeue went, if this process outlives it."""
    job = job_fields(job_id)
    exclude = sorted(set(hostnames(job.get("ExcNodeList", ""))) | set(hosts))
    partition = job.get("Partition", "")
    nodes = subprocess.run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N"], capture_output=True, text=True,
                           check=True).stdout.split()
    left = sorted(set(nodes) - set(exclude))
    if len(left) < int(job["NumNodes"]):
        raise RuntimeError(f"excluding {', '.join(exclude)} would leave {len(left)} node(s) of partition {partition} "
                           f"for a {job['NumNodes']}-node job; not requeued: repair or drain the bad node(s), or ask "
                           "for fewer nodes")
    excluded = ",".join(exclude)
    retry = (f"for i in $(seq 600); do scontrol update JobId={job_id} ExcNodeList={excluded} 2>/dev/null && exit 0; "
             "sleep 1; done; exit 1")
    helper = ["sbatch", "--parsable", f"--job-name=exclude-{job_id}", f"--partition={partition}", "--nodes=1",
              "--ntasks=1", "--cpus-per-task=1", "--time=15", f"--output={log_dir}/exclude-{job_id}-%j.out"]
    if job.get("Account") and job["Account"] != "(null)":
        helper.append(f"--account={job['Account']}")
    log_dir.mkdir(parents=True, exist_ok=True)  # sbatch cannot start a job whose log has nowhere to go
    submitted = subprocess.run([*helper, "--wrap", retry], capture_output=True, text=True)
    if submitted.returncode != 0:
        print(f"[harness] could not submit the helper that excludes {excluded} ({submitted.stderr.strip()}); while "
              f"the job is pending, run: scontrol update JobId={job_id} ExcNodeList={excluded}", file=sys.stderr,
              flush=True)
    # Said before it is done: the requeue ends this job's processes, this one among them.
    print(f"[harness] requeueing job {job_id} excluding {excluded} (helper job "
          f"{submitted.stdout.strip() or 'not submitted'})", file=sys.stderr, flush=True)
    requeued = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    return f"requeue: {requeued.stderr.strip() or 'done'}"


def after_step(run: RunDir, job_id: str | None) -> str:
    """What a job does when its training step has ended, decided from the run's own log: back in the
    queue if the workers stopped at a checkpoint on a signal that no requeue follows (SIGTERM from
    `scancel --signal=TERM`, say: if Slurm is already requeuing or ending the job, scontrol refuses
    and nothing changes), or if they moved off bad nodes (then without those nodes). Returns the
    run's state."""
    outcome = records.state(run)
    if job_id:  # the allocation's end, as near as the job itself can tell: for the run's goodput ledger
        run.record_job(event="step_end", job_id=job_id, outcome=outcome)
    if job_id and outcome == "preempted":
        # Slurm requeues a finished job too, a cancelled one included (it is COMPLETING, as after any end):
        # scancel must have the last word.
        if cancelled(job_id, job_log(run)[1]):
            print(f"[harness] run stopped at a checkpoint; job {job_id} was cancelled: not requeued",
                  file=sys.stderr, flush=True)
        else:
            print(f"[harness] run stopped at a checkpoint: requeueing job {job_id}", file=sys.stderr, flush=True)
            done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
            print(f"[harness] requeue: {done.stderr.strip() or 'done'}", file=sys.stderr, flush=True)
    elif job_id and outcome == "excluded":
        print(f"[harness] {requeue_excluding(job_id, run.excluded_hosts(), run.slurm)}", file=sys.stderr, flush=True)
    return outcome


class TorchrunJob:
    """What each node's Slurm task runs: the spec's set-up lines, then torchrun over a harness module
    (the trainer on a run directory, which resumes by itself, an evaluation, or the preflight)."""

    def __init__(self, module_args: list[str], cwd: str, cluster: ClusterConfig, max_restarts: int,
                 run_dir: str | None = None):
        self.module_args, self.cwd, self.run_dir = module_args, cwd, run_dir
        self.cluster, self.max_restarts = cluster, max_restarts
        self._proc: subprocess.Popen | None = None
        self._done = threading.Event()

    def __getstate__(self) -> dict:  # pickled by submitit at submission and again on requeue
        return {k: v for k, v in self.__dict__.items() if k not in ("_proc", "_done")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _proc=None, _done=threading.Event())

    def command(self, nnodes: int, head: str, job_id: str) -> list[str]:
        return torchrun_command(self.cluster.nproc_per_node, self.max_restarts, self.module_args, nnodes, head, job_id)

    def __call__(self) -> str:
        import submitit

        env = submitit.JobEnvironment()
        # SLURM_JOB_ID is unique per array task (env.job_id reads "123_4" there).
        cmd = self.command(env.num_nodes, env.hostnames[0], os.environ.get("SLURM_JOB_ID", env.job_id))
        print(f"[harness] node {env.node}/{env.num_nodes} ({env.hostname}): {shlex.join(cmd)}", flush=True)
        # torchrun's agent must survive USR2 (its default action is to die) and leave the signal to
        # the workers, which Slurm signals directly; an ignored signal stays ignored across exec,
        # and the trainer installs its own handler.
        self._proc = subprocess.Popen(["bash", "-c", node_script(self.cluster, cmd)], cwd=self.cwd,
                                      preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
        threading.Thread(target=lambda: (self._proc.wait(), self._done.set()), daemon=True).start()
        while not self._done.wait(timeout=1.0):  # a short wait keeps the main thread responsive to signals
            pass
        run = RunDir(Path(self.cwd) / self.run_dir) if self.run_dir else None
        outcome = records.state(run) if run else None
        # A signal that reaches torchrun's agent too (SIGTERM) makes it exit non-zero even when the
        # workers saved and stopped cleanly: the run's own log says what happened.
        if (self._proc.returncode != 0 and outcome not in ("preempted", "excluded")) or str(outcome).startswith("fail"):
            where = f"; the run's error records are in {run.errors}" if run else ""
            raise RuntimeError(f"torchrun exited with code {self._proc.returncode} on {env.hostname}; the run "
                               f"{outcome or 'ended'}; the failing rank's error is above{where}")
        # The job's next step is taken by one task: the first one on a host the run did not move off (the
        # first task's host may be the one that hung, its task stuck until Slurm ends the step).
        excluded = set(run.excluded_hosts()) if run and outcome == "excluded" else set()
        if run and env.global_rank == next((i for i, h in enumerate(env.hostnames) if h not in excluded), 0):
            outcome = after_step(run, os.environ.get("SLURM_JOB_ID"))
        return outcome or "done"

    def checkpoint(self) -> "object":
        """Called by submitit on task 0 when USR2 arrives: the workers got the signal too and are
        saving; wait for them, then let submitit requeue this same job."""
        import submitit

        if self._proc is not None and not self._done.wait(timeout=max(10, self.cluster.signal_lead_s - 15)):
            print("[harness] workers did not finish saving in time; the last periodic checkpoint will be used",
                  flush=True)
        if self.run_dir:  # submitit requeues the job and exits; this allocation ends here (the goodput ledger)
            RunDir(Path(self.cwd) / self.run_dir).record_job(event="step_end", job_id=os.environ.get("SLURM_JOB_ID"))
        return submitit.helpers.DelayedSubmission(self)
