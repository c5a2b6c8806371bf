"""The self-modulating slot-attention model, one role per file."""

from training.model.selfmod import ModelOutput, SelfModulatingSlotAttention, build_model

__all__ = ["ModelOutput", "SelfModulatingSlotAttention", "build_model"]
