from .reid_metric import ReIDMetric

__all__ = ['ReIDMetric']
