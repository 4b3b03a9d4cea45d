"""Declarations, predictions and model versions in SQL, photos and weights in object storage."""
