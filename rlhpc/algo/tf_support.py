"""The optional tf2 framework: RLlib's legacy API stack with TensorFlow and Keras 2.

Measured on TF 2.21: with Keras 3 (TF's default) RLlib's optimizer setup fails with
"Argument learning_rate should be float ... Received tf.Variable"; with tf-keras installed and
TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported, PPO trains.
"""

import importlib.util
import os

from rlhpc.errors import UserError


def prepare_tensorflow() -> None:
    missing = [name for name in ("tensorflow", "tf_keras") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--framework tf2 needs {' and '.join(missing)}: pip install -e '.[tf]' "
                        "(or use env_example_optimized_tf.yml)")
    # Must be in the environment before TensorFlow is first imported, here and in Ray's workers
    # (which inherit the driver's environment on a local Ray, and get it from the job's runtime env).
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
