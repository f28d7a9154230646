"""What a run's stderr shows of other libraries' warnings (rlhpc.algo.quiet): Gymnasium's as plain lines, RLlib's and
Ray's about their own internals not at all, in the driver and (through the callback) in every env runner."""

import logging
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
