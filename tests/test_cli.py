"The `conkernelclient` command, run as a user runs it: a subprocess, against real kernels."
import asyncio, json, os, subprocess, sys, tempfile
from pathlib import Path
import pytest
from jupyter_client.session import Session
from conkernelclient import ConKernelManager
from conftest import run

exe = str(Path(sys.executable).parent/'conkernelclient')
pytestmark = pytest.mark.timeout(120)

def cli(*args, timeout=100):
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)

def test_demo_reports_every_reply_for_conkernelclient():
    p = cli('--n', '30', '--timeout', '3')
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    ours = [l for l in lines if 'ConKernelClient' in l]
    assert len(ours) == 2 and all(' 30/30 replies' in l for l in ours), p.stdout

def test_run_prints_each_snippets_outputs_grouped_and_fails_on_error():
    p = cli('run', 'import time\nfor i in range(3): print("A", i, flush=True); time.sleep(0.05)',
            'for i in range(3): print("B", i, flush=True)', 'from IPython.display import display, HTML; display(HTML("<i>x</i>"))', '1/0', '2**10')
    assert p.returncode == 1
    blocks = p.stdout.split('\n[')
    assert blocks[0].endswith('\nA 0\nA 1\nA 2') and 'B' not in blocks[0]
    assert blocks[1].endswith('\nB 0\nB 1\nB 2') and 'A' not in blocks[1].split('|', 1)[1]
    assert '<IPython.core.display.HTML object>' in blocks[2]
    assert blocks[3].startswith('4] error') and 'ZeroDivisionError: division by zero' in blocks[3]
    assert blocks[4].startswith('5] ok') and '1024' in blocks[4]  # independent snippets: no abort after the error

def test_run_succeeds_with_exit_0_and_reads_file_cells():
    with tempfile.TemporaryDirectory() as d:
        f = Path(d)/'cells.py'; f.write_text('x = 6\n# %%\nprint(x*7)\n')
        p = cli('print("arg")', '--file', str(f))
    assert p.returncode == 0, p.stdout+p.stderr
    assert 'arg' in p.stdout and '42' in p.stdout

def test_existing_attaches_to_a_kernel_started_separately():
    async def main():
        km = ConKernelManager(session=Session(key=b'existing-key'))
        await km.start_kernel()
        try:
            proc = await asyncio.create_subprocess_exec(exe, 'run', 'import os; print(os.getpid())', '--existing', km.connection_file,
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err
            assert str(km.provisioner.process.pid) in out.decode()
            assert await km.is_alive()  # an attached kernel is left running
        finally: await km.shutdown_kernel(now=True)
    run(main())

def test_unknown_options_are_refused_not_ignored():
    p = cli('run', '--bogus', 'x', 'print(1)', timeout=60)
    assert p.returncode == 2 and 'unrecognized arguments: --bogus' in p.stderr and 'ConKernelClient' not in p.stdout

def test_url_runs_on_a_jupyter_server_and_kernel_id_attaches(tmp_path):
    from servers import jupyter_server, stop
    from conkernelclient.remote import RemoteKernelManager
    proc, url, token = jupyter_server(tmp_path)
    env = {**os.environ, 'JUPYTER_TOKEN': token}
    try:
        p = subprocess.run([exe, 'run', 'print("on the server")', '1/0', '--url', url], capture_output=True, text=True, timeout=100, env=env)
        assert p.returncode == 1 and 'on the server' in p.stdout and 'ZeroDivisionError' in p.stdout, p.stdout+p.stderr
        async def main():
            km = RemoteKernelManager(url, token=token)
            await km.start_kernel()
            kc = await km.client().start_channels()
            await kc.execute('answer = 42', reply=True, timeout=10)
            await kc.astop_channels()
            return km
        km = run(main())
        p = subprocess.run([exe, 'run', 'print(answer)', '--url', url, '--kernel-id', km.kernel_id], capture_output=True, text=True, timeout=100, env=env)
        assert p.returncode == 0 and '42' in p.stdout, p.stdout+p.stderr
        assert run(km.is_alive())  # an attached kernel is left running
        p = subprocess.run([exe, 'run', '1', '--url', url], capture_output=True, text=True, timeout=100, env={**env, 'JUPYTER_TOKEN': 'wrong'})
        assert p.returncode != 0 and 'refused the token' in p.stderr and 'wrong' not in p.stderr.replace('refused', '')
    finally: stop(proc)
