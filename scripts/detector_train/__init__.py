"""Training helpers for the plate detector (data, splits, model, targets). Not shipped on the unit."""
