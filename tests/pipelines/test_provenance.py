"""pipelines.provenance: machine description and code version."""

import re
import subprocess

from pipelines import provenance


def test_code_version_is_the_repositorys_commit():
    head = subprocess.run(["git", "-C", provenance.REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    version = provenance.code_version()
    assert re.fullmatch(r"[0-9a-f]+(\+dirty)?", version) and version.split("+")[0] == head


def test_machine_names_cpu_cores_and_load():
    machine = provenance.machine()
    assert machine["cpu"] and machine["cpus"] >= 1
    assert len(machine["load_average_1_5_15"]) == 3 and all(v >= 0 for v in machine["load_average_1_5_15"])
