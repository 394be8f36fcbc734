"""The Runner of mmdmpt: MMEngine's, able to run distributed on CPU-only machines."""

from typing import Dict, Optional

import torch
import torch.distributed as torch_dist
from mmengine.runner import Runner

from mmdmpt.registry import RUNNERS


@RUNNERS.register_module()
class ReIDRunner(Runner):
    """MMEngine's Runner, plus distributed runs on machines without a GPU.

    MMEngine's ``pytorch`` launcher calls ``torch.cuda.set_device`` and wraps
    the model in DDP with CUDA ``device_ids``; both fail without a GPU. Here,
    when no GPU is present, the process group is started with the gloo backend
    and DDP gets no device ids, so ``tools/dist_train.sh`` and
    ``tools/dist_test.sh`` also run on a CPU (which is how the tests exercise
    them). With a GPU nothing changes.
    """

    def setup_env(self, env_cfg: Dict) -> None:
        """Start a gloo process group first when distributed without a GPU."""
        if self.distributed and not torch.cuda.is_available():
            env_cfg = dict(env_cfg)
            dist_cfg = dict(env_cfg.get('dist_cfg') or {})
            dist_cfg['backend'] = 'gloo'
            env_cfg['dist_cfg'] = dist_cfg
            if self.launcher == 'pytorch' and not torch_dist.is_initialized():
                kwargs = {k: v for k, v in dist_cfg.items() if k not in ('backend', 'timeout')}
                torch_dist.init_process_group(backend='gloo', **kwargs)
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg: Optional[Dict], model: torch.nn.Module):
        """Wrap in DDP without device ids when distributed without a GPU."""
        if self.distributed and not torch.cuda.is_available():
            model_wrapper_cfg = dict(
                model_wrapper_cfg
                or dict(
                    type='MMDistributedDataParallel',
                    broadcast_buffers=False,
                    find_unused_parameters=self.cfg.get('find_unused_parameters', False),
                )
            )
            model_wrapper_cfg['device_ids'] = None
        return super().wrap_model(model_wrapper_cfg, model)
