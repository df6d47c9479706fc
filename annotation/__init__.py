"""The Label Studio side of ardrag: labeling configs, task export/import, server bootstrap."""
