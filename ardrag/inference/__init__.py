"""Driving the model: trajectories in, streamed frames out."""
