"""The AR-Drag model: motion-control conditioning, the bidirectional teacher, the causal student."""

from ardrag.console import route_library_logs

route_library_logs()  # before diffusers and transformers are imported: their warnings go to the log file

TEXT_TOKENS = 512  # diffusers' Wan I2V attention takes the last 512 context tokens as text
