"""pytest plugin: run jupyter_client's own tests with conkernelclient's classes in place of its async ones.

Load it with `-p swap_classes` (this folder on PYTHONPATH). With `CKC_SWAP=1` it rebinds, before any test module is
imported, the names through which jupyter_client's tests reach the async classes:

- `AsyncKernelManager` -> `ConKernelManager`, in `jupyter_client` and `jupyter_client.manager` (so the tests' own
  `from jupyter_client import AsyncKernelManager`, the `async_km` fixture's params, `tests.utils.AsyncKMSubclass`'s base,
  and `start_new_async_kernel`, hence pytest-jupyter's `jp_start_kernel` and test_client's `kc` fixture, all use it);
- `AsyncIOLoopKernelManager` -> `ConIOLoopKernelManager` (ConKernelManager mixed with the auto-restarting manager),
  in `jupyter_client.ioloop` and `jupyter_client.ioloop.manager` (test_restarter.py);
- `AsyncKernelClient` -> `ConKernelClient` in `jupyter_client`, `jupyter_client.asynchronous` and its `client` module
  (the default `client_class` of any remaining async manager resolves to it).

It also records which of our classes each test instantiated (terminal summary; `ckc_classes` in --junitxml), and stops
at collection if a test module did not pick up the swap. Unset (or anything but 1): nothing is touched, the baseline. No jupyter_client file is edited: module attributes are
set at `pytest_configure` and restored at `pytest_unconfigure`.
"""
import os

# jupyter_client is imported here, before any conftest, so both modes test the installed package (fetch.py does not
# unpack the sdist's copy of the source, which would otherwise shadow it from the sdist's root on sys.path).
import jupyter_client, jupyter_client.manager, jupyter_client.ioloop, jupyter_client.ioloop.manager
import jupyter_client.asynchronous, jupyter_client.asynchronous.client
import pytest

SWAP = os.environ.get('CKC_SWAP', '') == '1'
_mp = None

def _swaps():
    "[(module, attribute name, replacement)] for swapped mode."
    from conkernelclient import ConKernelClient, ConKernelManager
    from jupyter_client.ioloop import AsyncIOLoopKernelManager

    class ConIOLoopKernelManager(ConKernelManager, AsyncIOLoopKernelManager):
        "ConKernelManager with AsyncIOLoopKernelManager's auto-restarter."
    ConIOLoopKernelManager.__module__ = __name__

    jc, ioloop = jupyter_client, jupyter_client.ioloop
    return ([(m, 'AsyncKernelManager', ConKernelManager) for m in (jc, jc.manager)] +
            [(m, 'AsyncIOLoopKernelManager', ConIOLoopKernelManager) for m in (ioloop, ioloop.manager)] +
            [(m, 'AsyncKernelClient', ConKernelClient) for m in (jc, jc.asynchronous, jc.asynchronous.client)])

_made = []  # names of the conkernelclient classes instantiated during the current test

def _count_inits(mp, cls):
    "Record each instantiation of `cls` (or a subclass) in `_made`: proof that a test did run our classes."
    orig = cls.__init__
    def __init__(self, *args, **kwargs):
        _made.append(type(self).__name__)
        orig(self, *args, **kwargs)
    mp.setattr(cls, '__init__', __init__)

def pytest_configure(config):
    global _mp
    if not SWAP: return
    from conkernelclient import ConKernelClient, ConKernelManager
    _mp = pytest.MonkeyPatch()
    for mod, name, new in _swaps(): _mp.setattr(mod, name, new)
    for cls in (ConKernelManager, ConKernelClient): _count_inits(_mp, cls)
    config.stash[_used_key] = {}

_used_key = pytest.StashKey()

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _made.clear()

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    "In swapped mode, note which of our classes each test instantiated (a test that made none tested nothing of ours)."
    if not SWAP: return
    made = sorted(set(_made))
    item.config.stash[_used_key][item.nodeid] = made
    item.user_properties.append(('ckc_classes', ','.join(made)))  # shows in --junitxml

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not SWAP: return
    used = config.stash[_used_key]
    none = [n for n, made in used.items() if not made]
    terminalreporter.write_sep('-', 'CKC_SWAP: conkernelclient classes used')
    terminalreporter.write_line(f'{len(used)-len(none)} of {len(used)} tests instantiated ConKernelManager/ConKernelClient (or subclasses)')
    for n in none: terminalreporter.write_line(f'  made none: {n}')

def pytest_unconfigure(config):
    global _mp
    if _mp is not None: _mp.undo(); _mp = None

def pytest_report_header(config):
    where = os.path.dirname(jupyter_client.__file__)
    if not SWAP: return [f'CKC_SWAP: off (baseline: jupyter_client {jupyter_client.__version__} from {where})']
    import conkernelclient
    return [f'CKC_SWAP: on (AsyncKernelManager->ConKernelManager, AsyncIOLoopKernelManager->ConIOLoopKernelManager, '
            f'AsyncKernelClient->ConKernelClient; jupyter_client {jupyter_client.__version__} from {where}; '
            f'conkernelclient from {os.path.dirname(conkernelclient.__file__)})']

def pytest_collection_finish(session):
    "In swapped mode, check that the test modules did pick up the swapped classes (guards against a stale import)."
    if not SWAP: return
    import sys
    from conkernelclient import ConKernelManager
    checks = {'tests.test_kernelmanager': 'AsyncKernelManager', 'tests.utils': 'AsyncKMSubclass',
              'tests.test_restarter': 'AsyncIOLoopKernelManager'}
    for modname, attr in checks.items():
        mod = sys.modules.get(modname)
        if mod is None: continue
        cls = getattr(mod, attr)
        if not issubclass(cls, ConKernelManager): raise pytest.UsageError(f'{modname}.{attr} was not swapped: {cls!r}')
