from .backbones import *  # noqa: F401,F403
from .data_preprocessors import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .prompts import *  # noqa: F401,F403
from .reid import *  # noqa: F401,F403
