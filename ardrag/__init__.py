"""ardrag: real-time drag-controllable autoregressive video generation (AR-Drag) and its data machinery."""

__version__ = "0.1.0"
