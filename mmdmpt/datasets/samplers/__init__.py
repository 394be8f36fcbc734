from mmdmpt.utils.seeding import SeededIndex

from .identity_sampler import IdentitySampler

# SeededIndex lives in mmdmpt.utils.seeding; re-exported here because it is what
# IdentitySampler yields.
__all__ = ['IdentitySampler', 'SeededIndex']
