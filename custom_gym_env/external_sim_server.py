"""The "external simulator" of external_sim_env.py: a separate program, as EnergyPlus, SUMO or an FMU would be.

It drives a point on a line towards a target, one JSON line per request on a TCP socket bound to 127.0.0.1 only,
and writes its log in the folder it is given. Standard library only: it stands for a program you cannot change,
so everything the env needs from it is on its command line (port, folder, delays, faults to inject):

    python external_sim_server.py --port 40123 --dir /tmp/rlhpc-1000/local/runner-0-.../copy-0 --step-ms 2

Protocol (one JSON object per line, both ways). The first line from the client is the token the env wrote in
<dir>/sim.token (mode 600): loopback ports are reachable by every user of a node, the copy's folder is not, so a
client that cannot read the folder cannot drive the simulator; once its client is in, it stops listening. Then:

    {"op": "reset", "seed": 7}   -> {"x": -0.42, "target": 0.31}
    {"op": "step", "action": 2}  -> {"x": -0.32, "target": 0.31, "reward": 0.09, "terminated": false}

Faults, for tests of what a run does when its simulator fails: --crash-every-steps N exits (code 3) at every N-th
step it serves; --hang-after-steps N stops answering from step N on (sleeps forever, as a solver stuck in a loop).
It prints "ready <port>" on stdout once it listens; a port already taken exits with code 98 (the env then tries
another one).
"""

import argparse
import errno
import hmac
import json
import os
import random
import socket
import sys
import time

STEP, TOLERANCE = 0.1, 0.05  # a move, and how close to the target counts as reached
STEP_COST, REACH_BONUS = 0.01, 1.0
CRASH_EXIT, PORT_TAKEN_EXIT = 3, 98


def parse(argv):
    parser = argparse.ArgumentParser(description="a point-to-target simulator on a loopback socket")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True, help="the copy's scratch folder: sim.token is read, sim.log written")
    parser.add_argument("--step-ms", type=float, default=0.0, help="wall time a step takes")
    parser.add_argument("--crash-every-steps", type=int, default=0, help="exit at every N-th step (0: never)")
    parser.add_argument("--hang-after-steps", type=int, default=0, help="stop answering from step N on (0: never)")
    return parser.parse_args(argv)


class Point:
    """The dynamics: x and the target in [-1, 1]; action 0 moves left, 1 stays, 2 moves right. The reward is the
    distance gained minus a small cost per step, plus a bonus on reaching the target (which ends the episode)."""

    def __init__(self):
        self.rng = random.Random()
        self.x = self.target = 0.0

    def reset(self, seed):
        if seed is not None:
            self.rng.seed(seed)
        self.target = self.rng.uniform(-0.8, 0.8)
        self.x = self.target
        while abs(self.x - self.target) < 0.3:  # never start on the target
            self.x = self.rng.uniform(-1.0, 1.0)
        return {"x": self.x, "target": self.target}

    def step(self, action):
        before = abs(self.x - self.target)
        self.x = min(1.0, max(-1.0, self.x + (int(action) - 1) * STEP))
        after = abs(self.x - self.target)
        terminated = after <= TOLERANCE
        reward = before - after - STEP_COST + (REACH_BONUS if terminated else 0.0)
        return {"x": self.x, "target": self.target, "reward": reward, "terminated": terminated}


def listen(port, log):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", port))  # loopback only: no other machine can reach it
    except OSError as e:
        log(f"cannot listen on 127.0.0.1:{port}: {e}")
        sys.exit(PORT_TAKEN_EXIT if e.errno == errno.EADDRINUSE else 1)
    server.listen(1)
    return server


def serve(client, reader, args, log):
    """Answers one client until it hangs up; exits the process for the injected faults."""
    sim, steps = Point(), 0
    for line in reader:
        request = json.loads(line)
        if request["op"] == "reset":
            reply = sim.reset(request.get("seed"))
        else:
            steps += 1
            if args.crash_every_steps and steps % args.crash_every_steps == 0:
                log(f"step {steps}: crashing (--crash-every-steps {args.crash_every_steps})")
                os._exit(CRASH_EXIT)
            if args.hang_after_steps and steps >= args.hang_after_steps:
                log(f"step {steps}: hanging (--hang-after-steps {args.hang_after_steps})")
                while True:
                    time.sleep(3600)
            time.sleep(args.step_ms / 1000.0)
            reply = sim.step(request["action"])
        client.sendall((json.dumps(reply) + "\n").encode())
    log(f"client left after {steps} steps")


def main(argv=None):
    args = parse(argv)
    with open(os.path.join(args.dir, "sim.log"), "a", buffering=1) as log_file:
        def log(text):
            log_file.write(f"{time.strftime('%H:%M:%S')} pid {os.getpid()}: {text}\n")

        with open(os.path.join(args.dir, "sim.token")) as f:
            token = f.read().strip()
        server = listen(args.port, log)
        log(f"listening on 127.0.0.1:{args.port}")
        print(f"ready {args.port}", flush=True)
        while True:
            client, peer = server.accept()
            reader = client.makefile("r")
            if hmac.compare_digest(reader.readline().strip(), token):
                break
            log(f"refused a client without the token from {peer}")
            reader.close()
            client.close()
        server.close()  # one client, the env: nobody else can even connect now
        with client:
            serve(client, reader, args, log)


if __name__ == "__main__":
    main()
