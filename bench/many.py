"""Benchmark: what each kernel costs the process that runs its client, at 10 and 100 kernels (threads, file descriptors, CPU while
idle), and how long the client takes to notice that its kernel was killed (SIGKILL), and whether the other clients notice anything.

Run: `.venv/bin/python bench/many.py` (about two minutes; `--quick` for a smoke run). Tiny kernels (`conkernelclient.tinykernel`),
each with one `ConKernelManager` and one client, all in this process and on one event loop. Threads are the OS's, counted from before the
first kernel (ZMQ's I/O threads count too); descriptors are this process's, per measurement; idle CPU is this process's user+system time over the idle wait, as a share of one core."""
import argparse, asyncio, os, resource, signal, statistics, time
from conkernelclient import DeadKernelError
from conkernelclient.tinykernel import tiny_manager

def threads(): return len(os.listdir('/proc/self/task'))
def fds(): return len(os.listdir('/proc/self/fd'))
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime+r.ru_stime

async def start(n, at_once=8):
    "`n` started tiny kernels, each with one ready client: [(km, kc)]."
    gate = asyncio.Semaphore(at_once)
    async def one():
        async with gate:
            km = tiny_manager()
            await km.start_kernel()
            return km, await km.client().start_channels()
    return await asyncio.gather(*[one() for _ in range(n)])

async def detect(km, kc):
    "Seconds from a SIGKILL of `km`'s kernel to the failure of the request it was running."
    req = kc.execute('%noreply', reply=True, timeout=60)
    await asyncio.sleep(0.1)  # the request is out
    t0 = time.perf_counter()
    os.kill(km.provisioner.process.pid, signal.SIGKILL)
    try: await req
    except DeadKernelError: return time.perf_counter()-t0
    raise AssertionError('the request of a killed kernel did not fail with DeadKernelError')

async def measure(n, idle, kills, base_threads):
    base_fds = fds()
    pairs = await start(n)
    await asyncio.sleep(1)  # let start-up settle
    t0, c0 = time.perf_counter(), cpu()
    await asyncio.sleep(idle)
    idle_cpu = (cpu()-c0)/(time.perf_counter()-t0)
    row = dict(kernels=n, threads=threads()-base_threads, fds=fds()-base_fds, idle_cpu=idle_cpu)
    row['detect'] = [await detect(*pairs[i]) for i in range(kills)]
    rest = [await kc.execute('1', reply=True, timeout=30) for _, kc in pairs[kills:]]
    row['others_ok'] = sum(r['content']['status']=='ok' for r in rest)
    for km, kc in pairs:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    return row

async def main(quick):
    sizes, idle, kills = ((10, 20), 2, 2) if quick else ((10, 100), 30, 5)
    print(f'{"kernels":>8}{"threads":>9}{"fds":>6}{"fds/kernel":>11}{"idle CPU":>10}{"SIGKILL noticed (median, max)":>32}{"others ok":>11}')
    base_threads = threads()  # before any kernel: threads made once per process (a shared ZMQ context's) count too
    for n in sizes:
        r = await measure(n, idle, kills, base_threads)
        d = r['detect']
        print(f'{n:>8}{r["threads"]:>9}{r["fds"]:>6}{r["fds"]/n:>11.1f}{r["idle_cpu"]:>9.1%} {statistics.median(d)*1000:>18.0f} ms, {max(d)*1000:.0f} ms'
              f'{r["others_ok"]:>7}/{n-kills}')

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='a smoke run')
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],)*2)  # 100 clients need ~2,000
    asyncio.run(main(p.parse_args().quick))
