from .triplet_loss import TripletLoss, pairwise_euclidean

__all__ = ['TripletLoss', 'pairwise_euclidean']
