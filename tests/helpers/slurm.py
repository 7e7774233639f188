"""A real one-node SLURM cluster (Debian's slurm-wlm and munge) for the tests, started and stopped by process id.

The daemons run in the foreground as children of the test process, on free ports, with their
configuration, state, sockets and logs in one folder; clients find it through ``SLURM_CONF``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "srun")
PACKAGES = "slurm-wlm munge"


def search_path() -> str:
    """PATH with the system directories the daemons live in (/usr/sbin), which a user's PATH may lack."""
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def unavailable_reason() -> str | None:
    """Why SLURM cannot run here (None when it can): the daemons need root and the Debian packages."""
    if os.geteuid() != 0:
        return "SLURM tests need root (slurmd and munged run as root here)"
    missing = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name, path=search_path()) is None]
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"no package manager to install {PACKAGES} (missing: {', '.join(missing)})"
    return f"{PACKAGES} not installed (missing: {', '.join(missing)}): .ci/run installs them"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 // 2
    return 4096


def slurm_conf(root: Path, host: str, cpus: int) -> str:
    """A one-node, one-partition slurm.conf with everything kept under ``root``."""
    return "\n".join(
        [
            "ClusterName=tsmtest",
            f"SlurmctldHost={host}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={root / 'munge.socket'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmUser=root",
            "SlurmdUser=root",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            # the declared CPUs may exceed the real ones so that two test jobs run side by side
            "SlurmdParameters=config_overrides",
            "KillWait=5",
            # Lightning's DDP port is 15000 + the job id's last digits: apart from another test session's
            f"FirstJobId={1000 + os.getpid() % 8000}",
            "MinJobAge=600",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmdSpoolDir={root / 'slurmd'}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            f"NodeName={host} CPUs={cpus} RealMemory={_memory_mib()} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@dataclass
class SlurmCluster:
    """The running daemons (by process id) and the environment their clients need."""

    root: Path
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *command: str, check: bool = True) -> str:
        """A SLURM client command's standard output."""
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
        return done.stdout

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until the node accepts jobs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "idle" in self.run("sinfo", "-h", "-o", "%T", check=False):
                return
            self._check_alive()
            time.sleep(0.5)
        raise TimeoutError(f"SLURM node not idle after {timeout:.0f} s; logs in {self.root}")

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; logs in {self.root}")

    def stop(self) -> None:
        """Cancel the jobs left, then stop the daemons this object started, by process id, newest first."""
        if self.procs and all(proc.poll() is None for proc in self.procs):
            self.run("scancel", "--user", "root", check=False)
            deadline = time.monotonic() + 30
            while self.run("squeue", "-h", check=False).strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


def start_cluster(root: Path, cpus: int = 4) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in the foreground; the caller must :meth:`SlurmCluster.stop` it."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("slurmd", "state"):
        (root / sub).mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, host, max(cpus, os.cpu_count() or 1)))
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": search_path()}
    cluster = SlurmCluster(root, env)
    daemons = [
        [
            "munged",
            "--foreground",
            "--force",
            f"--socket={root / 'munge.socket'}",
            f"--pid-file={root / 'munged.pid'}",
            f"--log-file={root / 'munged.log'}",
            f"--seed-file={root / 'munged.seed'}",
        ],
        ["slurmctld", "-D", "-f", str(conf)],
        ["slurmd", "-D", "-f", str(conf)],
    ]
    try:
        for command in daemons:
            executable = shutil.which(command[0], path=env["PATH"])
            with open(root / f"{command[0]}.out", "wb") as log:
                daemon = subprocess.Popen([executable, *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT)
            cluster.procs.append(daemon)
            time.sleep(1.0)
            cluster._check_alive()
        cluster.wait_idle()
    except BaseException:
        cluster.stop()
        raise
    return cluster


class SlowFirstAttempt(pl.Callback):
    """Sleeps before each training epoch after the first (checkpointed) one, in a SLURM job's first attempt
    only: time to requeue it in the middle of training."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0 and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
            time.sleep(self.seconds)
