"""Celery workers that score declarations in chunks with the champion model."""
