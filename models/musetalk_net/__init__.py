"""MuseTalk (v1.5, v1.0) lip-sync engine built to the official architecture. Imports torch: keep it out
of the API process."""

from models.musetalk_net.engine import EngineOptions, MuseTalkEngine, load_model

__all__ = ["EngineOptions", "MuseTalkEngine", "load_model"]
