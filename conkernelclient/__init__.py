"Jupyter kernel clients that are safe and fast under concurrency: every request awaits its own reply."
__version__ = "0.0.1"
from .core import (ClientClosedError, ClientLoopError, ConChannel, ConKernelClient, ConKernelManager, DeadKernelError, InputError,
                   KernelRestartedError, Result, StartTimeoutError, nb_outputs)
from .subshells import KernelFeatureError, KernelReplyError, SubshellPool
