"""Training, evaluation and registration of HS classification models."""
