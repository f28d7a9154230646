"""A remote env runner's fatal error, carried to the driver: the line a failed run ends with names its cause.

RLlib ends an env runner whose `sample()` raised: its actor manager logs the exception with its traceback in the
runner's process (`Worker exception caught during apply()`, which Ray copies to the driver's stderr), then exits
it, and the driver sees only a dead actor. With every runner dead the run ends ("every env runner failed",
rlhpc.algo.metrics) and the cause, the simulator's own exception, was only in the middle of the log. Here a
filter on that log record in each env runner process puts the exception (its root cause's line and the whole
traceback) in Ray's internal key-value store, held by the GCS and so reachable from every node, under this Ray
job's key, and shortens the record to one line. The driver reads it back into the run's error (error.txt gets the
traceback, the console its root cause's line). In a search, trials share the Ray job: it is the last error of any.
"""

import json
import logging
import socket
import traceback

RLLIB_LOGGER = "ray.rllib.utils.actor_manager"  # where FaultTolerantActor.apply() logs the exception
RUNNER_FAILED = "Worker exception caught during"
NAMESPACE = "rlhpc"
MAX_CHARS = 20_000  # a traceback's worth; the key-value store is not a log


def root_cause(error: BaseException) -> BaseException:
    """RLlib re-raises an env's error as a bare `RuntimeError from e`: the exception at the end of the chain."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


class RecordRunnerFailure(logging.Filter):
    """On the record of a runner's fatal exception: keeps it for the driver, then leaves one line on the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info == (None, None, None):  # logger.exception() outside an except: "NoneType: None"
            record.exc_info = None
        if not record.exc_info or record.exc_info[1] is None or RUNNER_FAILED not in str(record.msg):
            return True
        cause = root_cause(record.exc_info[1])
        line = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0]}".rstrip(": ")
        try:
            _put({"line": line, "node": socket.gethostname(),
                  "traceback": "".join(traceback.format_exception(*record.exc_info))[-MAX_CHARS:]})
        except Exception:  # noqa: BLE001 -- reporting must never replace the error being reported
            return True
        record.msg, record.args, record.exc_info, record.exc_text = (
            f"this env runner failed: {line} (RLlib ends it; the traceback goes to the run's error.txt)", (), None,
            None)
        return True

    def __eq__(self, other):  # addFilter adds an equal filter once
        return isinstance(other, RecordRunnerFailure)

    def __hash__(self):
        return hash(RecordRunnerFailure)


def record_in_this_process() -> None:
    """Installs the filter (again is harmless): called where RLlib builds our callbacks, in every env runner."""
    logging.getLogger(RLLIB_LOGGER).addFilter(RecordRunnerFailure())


def _key() -> bytes:
    import ray

    return f"env_runner_error:{ray.get_runtime_context().get_job_id()}".encode()


def _put(failure: dict) -> None:
    from ray.experimental import internal_kv

    if internal_kv._internal_kv_initialized():
        internal_kv._internal_kv_put(_key(), json.dumps(failure).encode(), overwrite=True, namespace=NAMESPACE)


def last_failure() -> dict | None:
    """This Ray job's last env runner failure: {"line": "RuntimeError: ...", "node": ..., "traceback": ...}."""
    try:
        from ray.experimental import internal_kv

        if not internal_kv._internal_kv_initialized():
            return None
        value = internal_kv._internal_kv_get(_key(), namespace=NAMESPACE)
        return json.loads(value) if value else None
    except Exception:  # noqa: BLE001 -- a lost GCS: the run's own error goes on without the cause
        return None
