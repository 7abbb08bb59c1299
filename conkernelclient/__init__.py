"Jupyter kernel clients that are safe and fast under concurrency: every request awaits its own reply."
__version__ = "0.0.1"
from .core import (ChannelView, ClientClosedError, ClientLoopError, ConKernelClient, DeadKernelError, InputError, KernelRestartedError,
                   KernelState, NoReplyError, Request, RequestCancelledError, RequestTimeoutError, Result, Running, StartTimeoutError, nb_outputs)
from .local import ConChannel, ConKernelManager
from .subshells import KernelFeatureError, KernelReplyError, SubshellPool
from .remote import AuthenticationError, RemoteKernelClient, RemoteKernelManager, ServerError
from .blocking import ConBlockingKernelClient, ConBlockingKernelManager, ForkedClientError
from .pool import BlockingLease, ConBlockingKernelPool, KernelPool, Lease, PoolClosedError
from .comms import BlockingComm, BlockingComms, BlockingWidgets, Comm, CommError, Comms, Widgets
