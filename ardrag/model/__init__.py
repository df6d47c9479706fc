"""The AR-Drag model: motion-control conditioning, the bidirectional teacher, the causal student."""
