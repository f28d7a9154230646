"""From a RunSpec to an RLlib AlgorithmConfig, and the RLlib callbacks every run trains with."""
