"""Curation: turn inputs into tracked samples, route each clip to a state, account for every input.

Library only (no Prefect): ``flows/curate.py`` wraps these calls in tasks, and ``ardrag curate`` runs
that flow; a plain loop over the same calls (``run_local``) gives the same results.
"""
