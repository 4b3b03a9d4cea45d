"""The HS classification model: label space, encoders, fusion heads, checkpoints."""
