"""SlotServe training package: data, model, losses, metrics and the training loop."""
