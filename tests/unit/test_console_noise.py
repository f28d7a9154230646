"""What a run's stderr shows of other libraries' warnings (rlhpc.algo.quiet): Gymnasium's as plain lines, RLlib's and
Ray's about their own internals not at all, in the driver and (through the callback) in every env runner."""

import logging
import sys
import warnings


def test_gymnasium_warnings_come_without_colour_codes_and_internal_deprecations_not_at_all(capsys):
    from gymnasium import logger as gym_logger

    from rlhpc.algo.metrics import ReturnOverLast100Episodes

    with warnings.catch_warnings():
        ReturnOverLast100Episodes()  # what RLlib builds in each env runner process installs the filters there
        gym_logger.warn("The obs returned by the `step()` method is not within the observation space (test 27).")
        gym_logger.deprecation("The environment CartPole-v0 is out of date (test 27).")
    err = capsys.readouterr().err
    assert err == ("warning: gymnasium: The obs returned by the `step()` method is not within the observation space "
                   "(test 27).\n")
    rllib = logging.getLogger("ray._common.deprecation")
    assert not rllib.filter(logging.makeLogRecord({"msg": "DeprecationWarning: `RLModule(config=[RLModuleConfig "
                                                          "object])` has been deprecated."}))
    assert rllib.filter(logging.makeLogRecord({"msg": "DeprecationWarning: `some_key` has been deprecated."}))


def test_an_exit_inside_a_finalizer_prints_nothing_and_other_finalizer_errors_still_print():
    """What an env runner ended at the end of a run printed into the job's log (SystemExit from Ray's SIGTERM handler
    inside EnvRunner.__del__), in a process of its own as a runner is."""
    import subprocess

    code = """if True:
        from rlhpc.algo.quiet import quiet_rllib_noise
        quiet_rllib_noise()
        class Ended:
            def __del__(self):
                raise SystemExit(1)
        class Broken:
            def __del__(self):
                raise ValueError("a finalizer's own bug")
        Ended(); Broken()
        print("went on")"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout == "went on\n", out.stderr
    assert "SystemExit" not in out.stderr and out.stderr.count("Exception ignored in") == 1
    assert "ValueError: a finalizer's own bug" in out.stderr


def test_a_runners_fatal_error_is_one_line_naming_the_envs_own_exception(monkeypatch):
    """What RLlib logs in an env runner whose sample() raised (rlhpc.algo.runner_errors): the env's error, not
    RLlib's bare `RuntimeError from e`, kept for the driver with its traceback, and one line on the console."""
    import logging

    from rlhpc.algo import runner_errors

    kept = []
    monkeypatch.setattr(runner_errors, "_put", kept.append)
    try:
        try:
            raise ConnectionError("simulator lost its licence server\nsecond line")
        except ConnectionError as e:
            raise RuntimeError from e
    except RuntimeError:
        record = logging.LogRecord("ray.rllib.utils.actor_manager", logging.ERROR, "actor_manager.py", 201,
                                   "Worker exception caught during `apply()`: %s", ("",), sys.exc_info())
    assert runner_errors.RecordRunnerFailure().filter(record)
    assert record.getMessage() == ("this env runner failed: ConnectionError: simulator lost its licence server "
                                   "(RLlib ends it; the traceback goes to the run's error.txt)")
    assert record.exc_info is None and record.exc_text is None
    [failure] = kept
    assert failure["line"] == "ConnectionError: simulator lost its licence server"
    assert 'raise ConnectionError("simulator lost its licence server' in failure["traceback"]
    # The driver's own `logger.exception()` outside an except block printed "NoneType: None" under its line.
    record = logging.LogRecord("ray.rllib.utils.actor_manager", logging.ERROR, "actor_manager.py", 785,
                               "The actor is unavailable", (), (None, None, None))
    assert runner_errors.RecordRunnerFailure().filter(record) and record.exc_info is None and not kept[1:]


def test_tunes_failed_trial_line_comes_without_its_traceback():
    from rlhpc.algo.quiet import quiet_rllib_noise

    quiet_rllib_noise()
    tune_logger = logging.getLogger("ray.tune.execution.tune_controller")
    try:
        raise RuntimeError("simulator lost its licence server")
    except RuntimeError:
        record = tune_logger.makeRecord(tune_logger.name, logging.ERROR, "tune_controller.py", 1336,
                                        "Trial task failed for trial PPO_x_00000", (), sys.exc_info())
    assert tune_logger.filter(record) and record.exc_info is None
    assert logging.Formatter().format(record) == "Trial task failed for trial PPO_x_00000"


# A Slurm job's log, as Ray forwarded it from two workers ended as the run's trial ended (tests/test_slurm.py, a CI run
# of 2026-12-04): one raised SystemExit from Ray's SIGTERM handler while importing, one aborted when its raylet
# connection closed. Line by line, as a worker writes its stderr.
ENDED_WHILE_IMPORTING = [
    "Exception ignored in: <function _ModuleLock.__init__.<locals>.cb at 0x7f4f2a0b1ee0>",
    "Traceback (most recent call last):",
    '  File "<frozen importlib._bootstrap>", line 199, in cb',
    '  File "/check/work/main/.venv/lib/python3.11/site-packages/ray/_private/worker.py", line 1063, in '
    "sigterm_handler",
    "    raise_sys_exit_with_custom_error_message(",
    '  File "python/ray/_raylet.pyx", line 712, in ray._raylet.raise_sys_exit_with_custom_error_message',
    "SystemExit: 1",
]
ABORTED = [
    "[2026-12-04 06:41:10,976 C 11019 11019] core_worker.cc:3345:  An unexpected system state has occurred. You have "
    "likely discovered a bug in Ray. Please report this issue at https://github.com/ray-project/ray/issues and we'll "
    "work with you to fix it. Check failed: raylet_ipc_client_->ActorCreationTaskDone() Status not OK: IOError: Broken "
    "pipe Unexpected error in IPC to the Raylet; the Raylet has most likely crashed.",
    "*** StackTrace Information ***",
    "/check/work/main/.venv/lib/python3.11/site-packages/ray/_raylet.so(+0x1812b9a) [0x7ff9fe012b9a] "
    "ray::operator<<()",
    "ray::IDLE(_start+0x21) [0x5620c805c081] _start",
]
AN_ENV_BUG = [
    "Traceback (most recent call last):",
    '  File "/home/me/sim.py", line 12, in step',
    "    raise ValueError('bad setpoint')",
    "ValueError: bad setpoint",
]


def test_workers_ended_by_ray_print_nothing_while_a_real_traceback_and_other_lines_still_print():
    from rlhpc.algo.quiet import EndingWorkersFilter

    ending_workers = EndingWorkersFilter()
    importing, aborting, env = ("10.0.0.12", 11017, True), ("10.0.0.11", 11019, True), ("10.0.0.12", 11020, True)
    shown = []
    for i in range(len(ENDED_WHILE_IMPORTING)):  # interleaved, one line per batch
        shown += ending_workers.lines(importing, ENDED_WHILE_IMPORTING[i:i + 1])
        shown += ending_workers.lines(aborting, ABORTED[i:i + 1])
        shown += ending_workers.lines(env, AN_ENV_BUG[i:i + 1])
    shown += ending_workers.lines(importing, ["a line the worker printed later"])
    assert shown == AN_ENV_BUG + ["a line the worker printed later"]
    assert ending_workers.lines(aborting, ["anything after its abort"]) == []
    # The same traceback from a SystemExit of the env's own (sys.exit in the simulator) is not Ray's: it prints.
    own_exit = AN_ENV_BUG[:3] + ["SystemExit: 3"]
    assert EndingWorkersFilter().lines(env, own_exit) == own_exit
