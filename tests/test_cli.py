"The `conkernelclient` command, run as a user runs it: a subprocess, against real kernels and a real Jupyter Server."
import asyncio, contextlib, io, json, os, signal, subprocess, sys, time
from pathlib import Path
from unittest import mock
import pytest
from jupyter_client import AsyncKernelClient
from jupyter_client.session import Session
from conkernelclient import ConKernelClient, ConKernelManager
from conkernelclient import cli as cli_module
from conftest import run

exe = str(Path(sys.executable).parent/'conkernelclient')
pytestmark = pytest.mark.timeout(120)

def cli(*args, timeout=100, env=None, **kw):
    "Run the command as a user does; the finished process."
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)

def one_error_line(p):
    "The command's single error line on stderr (there is no traceback, and no second error)."
    assert 'Traceback' not in p.stderr, p.stderr
    errors = [l for l in p.stderr.splitlines() if l.startswith('conkernelclient: error:')]
    assert len(errors) == 1, p.stderr
    return errors[0]

def write_tiny_spec(jupyter_path:Path):
    "A private kernelspec `tiny` (the tiny kernel, with the running Python) under `jupyter_path`."
    d = jupyter_path/'kernels'/'tiny'; d.mkdir(parents=True)
    argv = [sys.executable, '-m', 'conkernelclient.tinykernel', '-f', '{connection_file}']
    (d/'kernel.json').write_text(json.dumps(dict(argv=argv, display_name='tiny (private)', language='tiny')))

@pytest.fixture(scope='module')
def jupyter_path(tmp_path_factory):
    "A private JUPYTER_PATH holding the `tiny` kernelspec."
    p = tmp_path_factory.mktemp('jupyter_path')
    write_tiny_spec(p)
    return p

@pytest.fixture(scope='module')
def tiny_env(jupyter_path):
    "The environment of a command that finds the private `tiny` kernelspec."
    return {**os.environ, 'JUPYTER_PATH': str(jupyter_path)}

@pytest.fixture(scope='module')
def server(tmp_path_factory, jupyter_path):
    "A Jupyter Server (random token, private root) that also has the private `tiny` kernelspec: `(url, token)`."
    from servers import jupyter_server, stop
    with mock.patch.dict(os.environ, JUPYTER_PATH=str(jupyter_path)):  # the server's process inherits it
        proc, url, token = jupyter_server(tmp_path_factory.mktemp('server'))
    yield url, token
    stop(proc)

def notebook(path:Path, kernel:str, *cells:str):
    "Write an .ipynb whose metadata names `kernel`, with code `cells`."
    cells = [dict(cell_type='code', id=f'c{i}', metadata={}, outputs=[], execution_count=None, source=c) for i,c in enumerate(cells)]
    path.write_text(json.dumps(dict(nbformat=4, nbformat_minor=5, cells=cells, metadata=dict(kernelspec=dict(name=kernel, display_name=kernel)))))
    return path

def gone(pid:int):
    "Whether process `pid` has ended (a zombie nobody reaped counts as ended)."
    try: return Path(f'/proc/{pid}/status').read_text().split('State:')[1].split()[0] in ('Z', 'X')
    except (OSError, IndexError): return True

def wait_for_file(f:Path, proc, timeout:float=60):
    "The text of `f` once a snippet has written it (while `proc` still runs)."
    deadline = time.monotonic()+timeout
    while not f.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f'{f} never appeared'
        time.sleep(0.02)
    return f.read_text()

def pid_snippet(f:Path, then:str='import time; time.sleep(60)'):
    "A snippet that writes its kernel's pid to `f` (atomically), then runs `then`."
    return f'import os; open({str(f)+".tmp"!r}, "w").write(str(os.getpid())); os.replace({str(f)+".tmp"!r}, {str(f)!r})\n{then}'

# The demonstration

def test_demo_reports_every_reply_for_conkernelclient():
    p = cli('--n', '30', '--timeout', '3')
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    ours = [l for l in lines if 'ConKernelClient' in l]
    assert len(ours) == 2 and all(' 30/30 replies' in l for l in ours), p.stdout

def test_demo_compares_with_vanilla_asynckernelclient_which_loses_replies_in_another_order(monkeypatch):
    made, real = [], cli_module.vanilla_client
    def spy(km):
        made.append(real(km))
        return made[-1]
    monkeypatch.setattr(cli_module, 'vanilla_client', spy)
    out = io.StringIO()
    with contextlib.redirect_stdout(out): run(cli_module.demo(30, timeout=3))
    (vc,) = made  # the demo's second client came from `vanilla_client`
    assert type(vc) is AsyncKernelClient and not isinstance(vc, ConKernelClient)
    lines = out.getvalue().splitlines()
    in_order, shuffled = lines[2:4], lines[5:7]
    assert 'ConKernelClient' in shuffled[0] and 'AsyncKernelClient' in shuffled[1], out.getvalue()
    replies = lambda l: int(l.split('/')[0].split()[-1])
    assert replies(in_order[0]) == replies(shuffled[0]) == 30, out.getvalue()  # ours: every reply, in the same run
    assert replies(shuffled[1]) < 30, out.getvalue()  # vanilla, awaited in another order: waiters read each other's replies

# Running snippets

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

def test_run_succeeds_with_exit_0_and_reads_file_cells(tmp_path):
    f = tmp_path/'cells.py'; f.write_text('x = 6\n# %%\nprint(x*7)\n')
    for args in (['print("arg")', '--file', str(f)], ['--file', str(f), 'print("arg")']):
        p = cli(*args)
        assert p.returncode == 0, p.stdout+p.stderr
        assert 'arg' in p.stdout and '42' in p.stdout

ORDERS = [lambda opts, code: ['run', code, *opts],  # options last
          lambda opts, code: ['run', *opts, code],  # options between `run` and the snippets
          lambda opts, code: [*opts, 'run', code],  # options first
          lambda opts, code: [*opts, code]]          # options first, no `run`

def test_existing_attaches_in_either_option_order():
    async def main():
        km = ConKernelManager(session=Session(key=b'existing-key'))
        await km.start_kernel()
        try:
            for order in ORDERS:
                argv = order(['--existing', km.connection_file], 'import os; print(os.getpid())')
                proc = await asyncio.create_subprocess_exec(exe, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await asyncio.wait_for(proc.communicate(), 60)
                assert proc.returncode == 0, (argv, err)
                assert str(km.provisioner.process.pid) in out.decode(), argv
                assert await km.is_alive()  # an attached kernel is left running
        finally: await km.shutdown_kernel(now=True)
    run(main())

def test_url_runs_on_a_jupyter_server_in_either_option_order_and_kernel_id_attaches(server):
    from conkernelclient.remote import RemoteKernelManager
    url, token = server
    env = {**os.environ, 'JUPYTER_TOKEN': token}
    for order in ORDERS:
        argv = order(['--url', url, '--timeout', '30'], 'print("on the server")')
        p = cli(*argv, '1/0', env=env)
        assert p.returncode == 1 and 'on the server' in p.stdout and 'ZeroDivisionError' in p.stdout, (argv, p.stdout+p.stderr)
    async def main():
        km = RemoteKernelManager(url, token=token)
        await km.start_kernel()
        kc = await km.client().start_channels()
        await kc.execute('answer = 42', reply=True, timeout=10)
        await kc.astop_channels()
        return km
    km = run(main())
    try:
        for argv in (['run', 'print(answer)', '--url', url, '--kernel-id', km.kernel_id], ['--url', url, '--kernel-id', km.kernel_id, 'print(answer)']):
            p = cli(*argv, env=env)
            assert p.returncode == 0 and '42' in p.stdout, p.stdout+p.stderr
            assert run(km.is_alive())  # an attached kernel is left running
    finally: run(km.shutdown_kernel())
    assert {k['id'] for k in run(km.list_kernels())} == set()  # the kernels the command started, it shut down
    p = cli('--url', url, 'run', '1', env={**env, 'JUPYTER_TOKEN': 'wrong'})
    assert p.returncode == 1 and 'refused the token' in one_error_line(p) and 'wrong' not in p.stderr.replace('refused', '')

# Choosing the kernel

TINY = '%print 2'  # the tiny kernel prints 0 and 1; ipykernel has no %print magic

def test_kernel_chooses_the_kernelspec_locally_and_on_a_server(server, tiny_env):
    for argv in (['--kernel', 'tiny', 'run', TINY], ['run', TINY, '--kernel', 'tiny']):
        p = cli(*argv, env=tiny_env)
        assert p.returncode == 0 and p.stdout.endswith('| %print 2\n0\n1\n'), p.stdout+p.stderr
    p = cli('run', TINY, env=tiny_env)  # the default is python3
    assert p.returncode == 1 and 'UsageError' in p.stdout, p.stdout
    url, token = server
    p = cli('--url', url, '--kernel', 'tiny', TINY, env={**tiny_env, 'JUPYTER_TOKEN': token})
    assert p.returncode == 0 and p.stdout.endswith('| %print 2\n0\n1\n'), p.stdout+p.stderr

def test_a_notebook_runs_on_its_own_kernelspec_if_installed_else_python3(tmp_path, tiny_env):
    nb = notebook(tmp_path/'tiny.ipynb', 'tiny', TINY)
    p = cli('--file', str(nb), env=tiny_env)
    assert p.returncode == 0 and p.stdout.endswith('0\n1\n') and p.stderr == '', p.stdout+p.stderr
    p = cli('--file', str(nb), '--kernel', 'python3', env=tiny_env)  # --kernel overrides the notebook
    assert p.returncode == 1 and 'UsageError' in p.stdout
    nb = notebook(tmp_path/'elsewhere.ipynb', 'a-kernel-not-installed', 'import sys; print(sys.version_info[0])')
    p = cli('--file', str(nb), env=tiny_env)
    assert p.returncode == 0 and p.stdout.endswith('\n3\n'), p.stdout+p.stderr
    assert "asks for kernel 'a-kernel-not-installed', which is not installed here: running it on python3" in p.stderr

# Failures: one line on stderr, never a traceback

@pytest.mark.parametrize('argv,says', [
    (['--url', 'http://127.0.0.1:1'], '--url: only for running snippets'),  # once silently ran the demo on a local kernel
    (['--parallel', '2', '--kernel', 'tiny'], '--kernel, --parallel: only for running snippets'),
    (['run'], 'run needs snippets'),
    (['1', '--existing', 'k.json', '--url', 'http://127.0.0.1:1'], 'not both'),
    (['1', '--kernel-id', 'abc'], '--kernel-id names a kernel on a server'),
    (['1', '--existing', 'k.json', '--kernel', 'python3'], '--kernel chooses the kernel to start'),
    (['1', '--n', '3'], '--n sizes the demo'),
    (['--n', '0'], '--n must be at least 1'),
    (['1', '--timeout', '0'], '--timeout must be a positive number'),
    (['1', '--timeout', 'nan'], '--timeout must be a positive number'),
    (['1', '--parallel', '-1'], '--parallel must be a number of subshells'),
    (['1', '--pdb'], '--pdb and --xtra are not options'),
    (['1', '--bogus', 'x'], 'unrecognized arguments: --bogus')])
def test_bad_usage_exits_2_with_one_line_before_starting_anything(argv, says):
    p = cli(*argv, timeout=60)
    assert p.returncode == 2 and says in one_error_line(p) and p.stdout == '', p.stdout+p.stderr

def test_failures_it_can_name_print_one_line_and_exit_1(tmp_path, tiny_env):
    for argv, says in [(['1', '--existing', str(tmp_path/'missing.json')], 'FileNotFoundError'),
                       (['--file', str(tmp_path/'missing.py')], 'cannot read cells from'),
                       (['--kernel', 'no-such-kernel', '1'], "no kernelspec named 'no-such-kernel' is installed"),
                       (['--url', 'http://127.0.0.1:1', '1'], 'cannot reach the server'),
                       (['--kernel', 'tiny', '--parallel', '2', '1'], 'KernelFeatureError')]:  # the tiny kernel has no subshells
        p = cli(*argv, env=tiny_env, timeout=60)
        assert p.returncode == 1 and says in one_error_line(p), (argv, p.stdout+p.stderr)
    (tmp_path/'bad.ipynb').write_text('{not json')
    p = cli('--file', str(tmp_path/'bad.ipynb'))
    assert p.returncode == 1 and 'cannot read cells from' in one_error_line(p)

def test_a_remote_kernel_killed_mid_run_fails_its_snippets_and_ends_without_a_traceback(server, tmp_path):
    url, token = server
    f = tmp_path/'pid'
    proc = subprocess.Popen([exe, '--url', url, 'run', pid_snippet(f), 'print("queued behind it")'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, 'JUPYTER_TOKEN': token})
    try:
        os.kill(int(wait_for_file(f, proc)), signal.SIGKILL)  # the server notices, and restarts it
        out, err = proc.communicate(timeout=90)
    finally: proc.kill()
    assert proc.returncode == 1 and 'Traceback' not in err, out+err
    blocks = out.split('\n[')
    # the snippet queued behind fails with the kernel, unless the dead kernel had not read it yet: the server's socket then hands it
    # to the new kernel, which runs it (the client does not fail what may yet run)
    assert len(blocks) == 2 and 'failed (KernelRestartedError' in blocks[0], out
    assert 'failed (KernelRestartedError' in blocks[1] or blocks[1].startswith('2] ok'), out
    assert len([l for l in err.splitlines() if 'error:' in l]) <= 1, err  # the kernel's shutdown may be refused while it restarts: one line says so

def test_ctrl_c_ends_the_run_with_one_line_and_shuts_the_kernel_down(tmp_path):
    f = tmp_path/'pid'
    # a background job's Python ignores SIGINT; a user's terminal delivers it
    proc = subprocess.Popen([exe, 'run', pid_snippet(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        pid = int(wait_for_file(f, proc))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally: proc.kill()
    assert proc.returncode == 130 and err == 'conkernelclient: error: interrupted\n', out+err
    assert gone(pid)  # the kernel it started was shut down, not left behind
