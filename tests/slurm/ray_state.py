"""Write the Ray cluster's nodes and actors (dead ones too) to a JSON file: where did everything run?

Run inside a job while its Ray cluster is up, e.g. as the templates' post-trainer hook:
    RLHPC_POST_HOOK="python tests/slurm/ray_state.py OUT.json" sbatch slurm/gpu_trainer.sh ...
The dashboard is not installed, so `ray.util.state` does not work; the GCS actor table does.
"""

import json
import os
import sys

import ray
from ray._private import state

ray.init(address=os.environ["ip_head"], logging_level="ERROR", log_to_driver=False)
nodes = {n["NodeID"]: {"host": n["NodeManagerHostname"], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
                       "resources": n["Resources"]} for n in ray.nodes()}
actors = [{"class": a["ActorClassName"], "node": a["Address"]["NodeID"], "state": a["State"]}
          for a in state.actors().values()]
with open(sys.argv[1], "w") as f:
    json.dump({"nodes": nodes, "actors": actors}, f, indent=1)
