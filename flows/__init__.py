"""Prefect flows over ardrag's library calls (one file per flow)."""
