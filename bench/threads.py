"""Benchmark: calls per second from 16 threads sharing one client, against jupyter_client's `BlockingKernelClient` used the only
safe way, one call at a time behind a lock (it cannot be shared: jupyter_client #429, #436). Same ipykernel, one run.

Run: `.venv/bin/python bench/threads.py` (about two minutes; `--quick` for a smoke run). On ipykernel, and on the tiny kernel
(`conkernelclient.tinykernel`), which answers at once, so what each client costs per call shows. Rounds are interleaved, figures are medians.
Calls: `execute('1', reply=True)` and `kernel_info()` alternately (cheap requests: jedi's completions would make the kernel the bottleneck of both); the kernel runs them one at a time either way, so the
difference is what the client adds per call and whether callers wait on each other's round trips."""
import argparse, secrets, statistics, threading, time
from concurrent.futures import ThreadPoolExecutor
from jupyter_client import BlockingKernelClient
from jupyter_client.session import Session
from conkernelclient.blocking import ConBlockingKernelManager
from conkernelclient.local import ConKernelManager
from conkernelclient.tinykernel import tiny_manager

THREADS = 16

def call(kc, i):
    return kc.execute('1', reply=True, timeout=60) if i % 2 else kc.kernel_info(reply=True, timeout=60)

def rate(kc, per_thread, lock=None):
    "Calls per second with `THREADS` threads making `per_thread` calls each (serialised by `lock` if given)."
    def work(_):
        for i in range(per_thread):
            if lock is None: call(kc, i)
            else:
                with lock: call(kc, i)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as ex: list(ex.map(work, range(THREADS)))
    return THREADS*per_thread/(time.perf_counter()-t0)

def main(quick):
    for kernel in ('ipykernel', 'tiny'): measure(kernel, quick)

def measure(kernel, quick):
    "Interleaved rounds on one `kernel` ('ipykernel', or the tiny kernel that answers at once, so the clients' own cost shows)."
    per_thread, rounds = (10, 1) if quick else (50, 3)
    session = Session(key=secrets.token_hex(16).encode())
    with ConBlockingKernelManager(tiny_manager(session=session) if kernel=='tiny' else ConKernelManager(session=session)) as km:
        km.start_kernel()
        ours = km.client()
        info = km.akm.get_connection_info(session=True)
        for k in ('curve_publickey', 'curve_secretkey'):
            if isinstance(info.get(k), str): info[k] = info[k].encode()
        vc = BlockingKernelClient(**info); vc.start_channels(); vc.wait_for_ready(timeout=60)
        res = {}
        for _ in range(rounds):
            res.setdefault('ours, 16 threads at once', []).append(rate(ours, per_thread))
            res.setdefault('BlockingKernelClient, 16 threads, one call at a time', []).append(rate(vc, per_thread, threading.Lock()))
        vc.stop_channels()
    med = {k: statistics.median(v) for k, v in res.items()}
    base = med['BlockingKernelClient, 16 threads, one call at a time']
    print(f'## {kernel}')
    for k, v in med.items(): print(f'{k:<56}{v:>10,.0f} calls/s{v/base:>8.2f}x')

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='a smoke run')
    main(p.parse_args().quick)
