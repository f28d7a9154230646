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
