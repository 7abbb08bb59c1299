"Performance claims that are correctness claims (nothing here asserts a time), and a smoke run of the benchmark."
import asyncio, subprocess, sys, time
from pathlib import Path
import pytest
from conkernelclient.tinykernel import tiny_manager
from conftest import kernel, run

root = Path(__file__).parent.parent

@pytest.mark.timeout(120)
def test_10k_in_flight_against_default_hwm_kernel_loses_no_reply():
    "The tiny kernel's sockets keep ZMQ's default high-water mark (1000), as ipykernel's do."
    async def main():
        async with kernel(make=tiny_manager) as (km, kc):
            futs = [kc.execute('', reply=True, timeout=30) for _ in range(10_000)]
            time.sleep(3)  # a client slow to read: the kernel answers everything while nothing is read
            done, pending = await asyncio.wait(futs, timeout=35)
            assert not pending and all(f.result()['content']['status'] == 'ok' for f in done)
            assert sorted(f.result()['content']['execution_count'] for f in done)[-1] >= 10_000
    run(main())

@pytest.mark.timeout(180)
def test_benchmark_smoke_run():
    p = subprocess.run([sys.executable, str(root/'bench/bench.py'), '--quick'], capture_output=True, text=True, timeout=170)
    assert p.returncode == 0, p.stderr[-2000:]
    for kernel in ('tiny', 'ipykernel'): assert f'## {kernel} kernel' in p.stdout
    lost = [l.split() for l in p.stdout.splitlines() if l.startswith('1,000 at once: lost')]
    assert len(lost) == 2 and all(float(row[-2]) == 0 for row in lost), p.stdout  # ours lost no reply
