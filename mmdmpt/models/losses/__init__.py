from .label_smooth import LabelSmoothCrossEntropy
from .triplet_loss import TripletLoss, pairwise_euclidean

__all__ = ['LabelSmoothCrossEntropy', 'TripletLoss', 'pairwise_euclidean']
