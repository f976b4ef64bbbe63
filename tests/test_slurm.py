"""The workflow on a real SLURM through profiles/slurm, unchanged: a one-node cluster with accounting, started on
this machine for this module from Debian's packages (.ci/run installs them) and stopped after it, runs the builds
and validations of a few artifacts of one fixture as SLURM jobs."""
import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ARTIFACTS, SNAKEMAKE, linked_model, read_json, run, verdicts

COMMANDS = ["munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sacctmgr", "sbatch"]
CLUSTER = "phi-forge-test"
ACCOUNT = "phi-forge"  # the profile's slurm_account
PARTITION = "cpu"  # the profile's slurm_partition
MODEL = "fixture-phi-3-mini-4k"
ON_SLURM = ["gguf/Q8_0", "openvino/int8"]  # cheap artifacts; Q8_0 is made from F16, copied from the local run
# Where srun inside a job looks for the config: the jobstep plugin strips SLURM_CONF (every SLURM_* variable but the
# job's identity) from the environment of the srun it runs the rule in.
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def succeeds(args, env=None) -> bool:
    return run(args, env=env, check=False).returncode == 0


def configure(folder) -> dict:
    """slurm.conf, slurmdbd.conf and the munge key for one node, this machine, that is the controller too; every
    file and socket under `folder`, every port a free one. Returns the ports."""
    for sub in ("munge", "mysql", "state", "spool"):
        (folder / sub).mkdir(mode=0o700)
    (folder / "munge" / "munge.key").write_bytes(os.urandom(1024))
    (folder / "munge" / "munge.key").chmod(0o400)
    ports = {name: free_port() for name in ("mariadb", "slurmdbd", "slurmctld", "slurmd")}
    node = socket.gethostname().split(".")[0]
    memory_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    common = f"AuthType=auth/munge\nAuthInfo=socket={folder}/munge/munge.socket\nSlurmUser=root\n"
    (folder / "slurmdbd.conf").write_text(
        common + f"DbdHost=localhost\nDbdPort={ports['slurmdbd']}\nStorageType=accounting_storage/mysql\n"
        f"StorageHost=127.0.0.1\nStoragePort={ports['mariadb']}\nStorageUser=slurm\nStorageLoc=slurm_acct_db\n"
        f"PidFile={folder}/slurmdbd.pid\nLogFile={folder}/slurmdbd.log\n")
    (folder / "slurmdbd.conf").chmod(0o600)  # slurmdbd refuses a config others can read
    (folder / "slurm.conf").write_text(
        common + f"ClusterName={CLUSTER}\nSlurmctldHost={node}(127.0.0.1)\nSlurmdUser=root\n"
        f"SlurmctldPort={ports['slurmctld']}\nSlurmdPort={ports['slurmd']}\n"
        f"StateSaveLocation={folder}/state\nSlurmdSpoolDir={folder}/spool\n"
        f"SlurmctldPidFile={folder}/slurmctld.pid\nSlurmdPidFile={folder}/slurmd.pid\n"
        f"SlurmctldLogFile={folder}/slurmctld.log\nSlurmdLogFile={folder}/slurmd.log\n"
        # no cgroups in the sandbox: memory is booked per job, not enforced
        "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\n"
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/affinity\nMpiDefault=none\n"
        # the plugin asks sacct for job states; job_comment keeps the comment that names each job's rule
        f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStoragePort={ports['slurmdbd']}\n"
        "AccountingStorageHost=localhost\nAccountingStoreFlags=job_comment\n"
        f"AccountingStoragePass={folder}/munge/munge.socket\n"  # clients reach slurmdbd through this munged
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs=2 RealMemory={memory_mb * 9 // 10} State=UNKNOWN\n"
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP\n")
    return ports


def start(folder, ports: dict, env: dict, daemons: dict):
    """munged, MariaDB, slurmdbd, slurmctld and slurmd in the foreground, each in `daemons` from its start on; the
    cluster, the account and this user made with sacctmgr before slurmctld starts."""
    def daemon(name, *args):
        with open(folder / f"{name}.out", "w") as log:
            daemons[name] = subprocess.Popen([name, *args], stdout=log, stderr=subprocess.STDOUT,
                                             env={**os.environ, **env})

    def wait_for(name, ready):
        deadline = time.monotonic() + 60
        while not ready():
            log = (folder / f"{name}.out").read_text()[-3000:]
            assert daemons[name].poll() is None, f"{name} exited:\n{log}"
            assert time.monotonic() < deadline, f"{name} not ready after 60 s:\n{log}"
            time.sleep(0.5)

    munge_socket = folder / "munge" / "munge.socket"
    daemon("munged", "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={folder}/munge/munge.key",
           f"--pid-file={folder}/munge/munged.pid", f"--log-file={folder}/munge/munged.log",
           f"--seed-file={folder}/munge/munged.seed")
    wait_for("munged", munge_socket.exists)

    mariadb = ["--no-defaults", f"--datadir={folder}/mysql", "--user=root"]
    run(["mariadb-install-db", *mariadb, "--auth-root-authentication-method=normal", "--skip-test-db"])
    mariadb_socket = f"--socket={folder}/mariadbd.sock"
    daemon("mariadbd", *mariadb, mariadb_socket, f"--port={ports['mariadb']}", "--bind-address=127.0.0.1",
           "--skip-name-resolve", f"--pid-file={folder}/mariadbd.pid")
    wait_for("mariadbd", lambda: succeeds(["mariadb-admin", "--no-defaults", mariadb_socket, "ping"]))
    # slurmdbd's own database user, over TCP on the free port: the socket it would use is the system's
    run(["mariadb", "--no-defaults", mariadb_socket, "-e",
         "CREATE USER slurm@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO slurm@'127.0.0.1';"])

    daemon("slurmdbd", "-D")  # reads slurmdbd.conf beside SLURM_CONF
    wait_for("slurmdbd", lambda: succeeds(["sacctmgr", "-n", "list", "cluster"], env))
    user = getpass.getuser()
    for entity in (["cluster", CLUSTER], ["account", ACCOUNT, f"cluster={CLUSTER}"],
                   ["user", user, f"account={ACCOUNT}", f"defaultaccount={ACCOUNT}", f"cluster={CLUSTER}"]):
        run(["sacctmgr", "-i", "add", *entity], env=env)

    daemon("slurmctld", "-D")
    wait_for("slurmctld", lambda: succeeds(["scontrol", "ping"], env))
    daemon("slurmd", "-D")
    wait_for("slurmd", lambda: run(["sinfo", "-h", "-o", "%T"], env=env).stdout.strip() == "idle")


def stop(env: dict, daemons: dict):
    """Cancels the jobs still queued or running (a failed test's), then stops the daemons that were started, the
    last started first."""
    if "slurmctld" in daemons:
        run(["scancel", "--user", getpass.getuser()], env=env, check=False)
        deadline = time.monotonic() + 60
        while run(["squeue", "-h"], env=env, check=False).stdout.strip() and time.monotonic() < deadline:
            time.sleep(1)
    for process in reversed(daemons.values()):
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The clients' environment (SLURM_CONF) of a one-node SLURM with accounting, stopped after the module."""
    missing = [name for name in COMMANDS if not shutil.which(name)]
    assert not missing, f"the SLURM test needs {missing}: apt-get install slurm-wlm munge slurmdbd " \
                        "mariadb-server (.ci/run installs them)"
    folder = tmp_path_factory.mktemp("slurm")
    ports = configure(folder)
    env = {"SLURM_CONF": str(folder / "slurm.conf")}
    DEFAULT_CONF.symlink_to(folder / "slurm.conf")  # fails where there is one: this machine's own SLURM, not ours
    daemons = {}
    try:
        start(folder, ports, env, daemons)
        yield env
    finally:
        stop(env, daemons)
        DEFAULT_CONF.unlink()


def test_builds_and_validations_run_as_slurm_jobs_with_the_local_verdicts(pipeline_run, repo_copy, slurm):
    """Only build and validate jobs are left to run (the checkpoint, the reference and Q8_0's base are the local
    run's); each is a SLURM job that completes, and each artifact gets the local run's verdict, check by check."""
    model = linked_model(repo_copy, MODEL, ("fixture", "checkpoint", "provenance.json", "reference", "gguf/F16"))
    run([SNAKEMAKE, "--workflow-profile", "profiles/slurm", "--config", f"models=[{MODEL}]", "--",
         *[f"artifacts/{MODEL}/{artifact}.validation.json" for artifact in ON_SLURM]],
        cwd=repo_copy, env=slurm, timeout=600)
    # every job this cluster ran (sacct's default starts at midnight); a job's name is the run's id, its comment
    # names its rule and wildcards
    jobs = dict(line.split("|") for line in run(["sacct", "-n", "-X", "-P", "-S", "now-1days", "-o",
                                                  "Comment,State"], env=slurm).stdout.split())
    expected = {f"rule_{rule}_wildcards_{MODEL}_{artifact.replace('/', '_')}"
                for rule in ("build", "validate") for artifact in ON_SLURM}
    # F16 too where the local one is older than its toolchain (a developer's checkout, never a fresh clone)
    assert expected <= set(jobs) and set(jobs) <= expected | {f"rule_build_wildcards_{MODEL}_gguf_F16"}, jobs
    assert set(jobs.values()) == {"COMPLETED"}, jobs
    for artifact in ON_SLURM:
        assert verdicts(read_json(model / f"{artifact}.validation.json")) == \
               verdicts(read_json(ARTIFACTS / MODEL / f"{artifact}.validation.json")), artifact
