"""Data: the sample format, buckets, control heatmaps, codecs, shards, the loader and the sources."""
