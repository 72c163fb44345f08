"""Ops for jobs that are not plain asset materializations (incremental prediction refresh)."""
