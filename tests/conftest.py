"Shared helpers: every test starts real ipykernels and bounds every wait."
import asyncio, contextlib, os, sys
from pathlib import Path
import pytest
from jupyter_client.session import Session
from conkernelclient import ConKernelManager

@contextlib.asynccontextmanager
async def kernel(clients:int=1, make=ConKernelManager, **km_kw):
    "A fresh kernel (ipykernel, or what `make` makes, e.g. `tiny_manager`) and `clients` started clients, all closed afterwards."
    km = make(session=Session(key=b'test-key'), **km_kw)
    await km.start_kernel()
    kcs = []
    try:
        for _ in range(clients): kcs.append(await asyncio.wait_for(km.client().start_channels(), 60))
        yield km, *kcs
    finally:
        for kc in kcs: await kc.astop_channels()
        await km.shutdown_kernel(now=True)

def run(coro, timeout:float=90):
    "Run `coro` in a fresh event loop, bounded by `timeout` seconds."
    return asyncio.run(asyncio.wait_for(coro, timeout))

def settled(kc):
    "Whether the client holds no request anybody waits for: nothing awaited, followed or held (ghosts the kernel still runs may remain)."
    return not kc._requests and not kc._held

def pending(kc, msg_id:str):
    "Whether request `msg_id` is still pending on the client (awaited, or held)."
    return msg_id in kc._requests

def open_fds():
    "How many file descriptors this process has open."
    return len(os.listdir('/proc/self/fd'))

@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "A Jupyter Server (random token, private root) shared by the tests of one module: `(url, token)`."
    from servers import jupyter_server, stop
    proc, url, token = jupyter_server(tmp_path_factory.mktemp('server'))
    yield url, token
    stop(proc)
