"""The preflight (rlhpc.slurm.doctor): the node checks here, in this process; on the Slurm test cluster in
test_slurm.py."""

import socket
import time

from conftest import clean_env, one_error_line, run_module


def test_the_preflight_names_a_node_whose_environment_differs_from_the_heads():
    from rlhpc.slurm import doctor
    from rlhpc.slurm.findings import NodeReport

    head = NodeReport(node="n1", versions={"python": "3.11.7", "gymnasium": "1.2.2"})
    other = NodeReport(node="n2", versions={"python": "3.11.7", "gymnasium": "0.29.1"})
    doctor.compare([head, other])
    lines, failures = doctor.report_lines([head, other])
    assert failures == 1 and lines[0].startswith("node n1: ok (")
    assert lines[2] == ("node n2: FAIL gymnasium 0.29.1 here, 1.2.2 on n1 (the head): use one Python environment "
                        "on every node (e.g. RLHPC_VENV=/path/to/.venv)")


def test_the_preflight_outside_slurm_checks_this_machine(monkeypatch, tmp_path, capsys):
    from rlhpc.slurm import doctor

    for key in ("SLURM_JOB_ID", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RLHPC_RAY_TMP"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RLHPC_OBJECT_STORE_MEMORY", str(1 << 20))  # this machine's /dev/shm is not the question
    assert doctor.main(["--storage-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("doctor: 1 node(s), 0 failure(s)")
    token = tmp_path / "token"
    token.write_text("secret")
    token.chmod(0o640)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert doctor.main(["--storage-path", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL the token file {token} has mode 640: other users can read it; chmod 600 {token}" in out


def test_the_doctor_on_a_closed_port_says_so_in_one_line_within_seconds():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    out = run_module("rlhpc.doctor", "--address", f"127.0.0.1:{port}", env=clean_env(), timeout=60)
    assert time.monotonic() - started < 10
    assert out.returncode == 2
    assert one_error_line(out.stderr) == (f"error: cannot reach the Ray cluster at 127.0.0.1:{port}: Connection "
                                          "refused (is the head node up? see `ray start --head --port=...`)")


def test_the_doctor_names_a_storage_path_that_does_not_exist(monkeypatch, tmp_path, capsys):
    from rlhpc.slurm import doctor

    for key in ("SLURM_JOB_ID", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RLHPC_RAY_TMP"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RLHPC_OBJECT_STORE_MEMORY", str(1 << 20))
    assert doctor.main(["--storage-path", str(tmp_path / "results")]) == 0  # a new folder: what a first run makes
    assert "--storage-path" not in capsys.readouterr().out
    missing = tmp_path / "scrach" / "results"
    assert doctor.main(["--storage-path", str(missing)]) == 0  # the trainer creates it: a warning
    out = capsys.readouterr().out
    assert f"WARN --storage-path {missing} does not exist: the trainer will create it (below {tmp_path}); check " \
           "the path for a typo" in out
    assert not missing.exists()
    (tmp_path / "file").write_text("")
    assert doctor.main(["--storage-path", str(tmp_path / "file" / "results")]) == 1
    out = capsys.readouterr().out
    assert f"FAIL --storage-path {tmp_path}/file/results does not exist and cannot be created ({tmp_path}/file " \
           "is not a writable directory)" in out


def test_the_doctor_names_an_env_config_path_missing_on_the_node(monkeypatch, tmp_path, capsys):
    from rlhpc.slurm import doctor

    for key in ("SLURM_JOB_ID", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RLHPC_RAY_TMP"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RLHPC_OBJECT_STORE_MEMORY", str(1 << 20))
    data = tmp_path / "building_data"
    data.mkdir()
    common = ["--storage-path", str(tmp_path), "--env-config", "zones=5", "--env-config", "name=office"]
    assert doctor.main([*common, "--env-config", f"data_dir={data}"]) == 0
    assert "--env-config" not in capsys.readouterr().out
    assert doctor.main([*common, "--env-config", f"data_dir={tmp_path}/bulding_data"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL --env-config data_dir={tmp_path}/bulding_data: no such file or folder on this node: put the " \
           "simulator's data on a file system every node mounts" in out
    assert doctor.main(["--env-config", "data_dir"]) == 2
    assert capsys.readouterr().err.strip() == ("error: malformed --env-config 'data_dir': expected KEY=VALUE, e.g. "
                                               "--env-config lr=1e-3")


def test_the_doctor_names_the_package_that_pins_numpy_below_2(monkeypatch, tmp_path):
    from rlhpc.slurm import doctor

    # A package's real metadata on the import path, as pip leaves it (CityLearn 2.3 pins NumPy < 2).
    info = tmp_path / "citylearn-2.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: citylearn\nVersion: 2.3.1\n"
                                   "Requires-Dist: numpy<2.0.0,>=1.24\nRequires-Dist: pandas\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert doctor.check_numpy({"numpy": "2.4.6", "ray": "2.60.0"}) == []
    [finding] = doctor.check_numpy({"numpy": "1.26.4", "ray": "2.60.0"})
    assert finding.level == "FAIL"
    assert finding.text == ("NumPy 1.26.4 here: Ray 2.60.0's pyarrow needs NumPy 2 (`import ray.tune` fails); pinned "
                            "below 2 by citylearn (numpy<2.0.0,>=1.24): install that package in its own "
                            "environment, or one release of it that takes NumPy 2")
