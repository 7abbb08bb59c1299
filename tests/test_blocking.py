"The blocking facade: one client shared by many threads, each call getting its own result, against real kernels and a real server."
import asyncio, os, signal, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
import pytest
from jupyter_client.session import Session
from conkernelclient import ClientClosedError, DeadKernelError, KernelRestartedError
from conkernelclient.blocking import ConBlockingKernelClient, ConBlockingKernelManager
from conkernelclient.remote import RemoteKernelManager
from conftest import open_fds, settled
from servers import jupyter_server, stop

pytestmark = pytest.mark.timeout(180)

def loop_threads(): return [t for t in threading.enumerate() if t.name=='conkernelclient']

def manager(): return ConBlockingKernelManager(session=Session(key=b'threads'))

def kernel_pid(kc):
    r = kc.execute('', user_expressions=dict(pid='__import__("os").getpid()'), reply=True, timeout=10)
    return int(r['content']['user_expressions']['pid']['data']['text/plain'])

def mixed_calls(kc, t:int, n:int):
    "`n` mixed calls from thread `t`, each checked to be its own."
    for i in range(n):
        tag, kind = f't{t}_{i}', i % 4
        if kind==0:
            r = kc.execute(f'{tag} = {i}\nprint("{tag}")', outputs=True, timeout=60)
            assert [o.text for o in r.outputs] == [f'{tag}\n'], r.outputs
        elif kind==1:
            r = kc.complete(f't{t}_{i-1}'[:-1], reply=True, timeout=60)  # the name defined just before, by this thread
            assert f't{t}_{i-1}' in r['content']['matches'] and r['content']['cursor_end'] == len(f't{t}_{i-1}')-1
        elif kind==2:
            r = kc.inspect(f't{t}_{i-2}', reply=True, timeout=60)
            assert r['content']['found'] and str(i-2) in r['content']['data']['text/plain']
        else:
            r = kc.execute(f'v = input("{tag}")\nprint(v)', on_input=lambda prompt, pw: prompt.upper(), outputs=True, timeout=60)
            assert [o.text for o in r.outputs] == [f'{tag.upper()}\n'], r.outputs
    return n

def test_16_threads_50_mixed_calls_each_get_their_own_result():
    before = len(loop_threads())
    with manager() as km:
        km.start_kernel()
        kc = km.client()
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as ex:
            futs = [ex.submit(mixed_calls, kc, t, 50) for t in range(16)]
            assert sum(f.result(timeout=150) for f in futs) == 800
        print(f'\n16 threads x 50 mixed calls on one client: 800/800 own results in {time.monotonic()-t0:.1f} s')
        assert settled(kc.aclient)
    assert len(loop_threads()) == before

def test_jupyter_client_429_long_execute_interactive_and_completes_meanwhile():
    with manager() as km:
        km.start_kernel()
        kc = km.client()
        seen = []
        with ThreadPoolExecutor(2) as ex:
            long = ex.submit(kc.execute_interactive, 'import time\nfor i in range(10): print(i, flush=True); time.sleep(0.1)',
                             output_hook=seen.append, timeout=60)
            time.sleep(0.1)
            # the kernel answers the completes once the cell is done (its shell runs one request at a time); none is lost or hangs
            for _ in range(5): assert 'import' in kc.complete('impo', reply=True, timeout=30)['content']['matches']
            assert long.result(timeout=60)['content']['status'] == 'ok'
        assert ''.join(m['content']['text'] for m in seen if m['msg_type']=='stream') == ''.join(f'{i}\n' for i in range(10))

@pytest.mark.parametrize('event', ['sigkill', 'restart', 'close'])
def test_threads_blocked_in_calls_get_the_named_error_promptly(event):
    km = manager()
    try:
        km.start_kernel()
        kc = km.client()
        pid = kernel_pid(kc)
        with ThreadPoolExecutor(4) as ex:
            futs = [ex.submit(kc.execute, 'import time; time.sleep(60)', reply=True, timeout=120) for _ in range(4)]
            time.sleep(0.5)
            t0 = time.monotonic()
            if event=='sigkill': os.kill(pid, signal.SIGKILL)
            elif event=='restart': km.restart_kernel(now=True)
            else: kc.close()
            errs = [f.exception(timeout=15) for f in futs]
            took = time.monotonic()-t0
        want = dict(sigkill=DeadKernelError, restart=KernelRestartedError, close=ClientClosedError)[event]
        assert all(isinstance(e, want) for e in errs), errs
        assert took < 10
        if event=='restart': assert kc.execute('1', reply=True, timeout=30)['content']['status'] == 'ok'
    finally: km.close()

def test_close_leaves_no_threads_fds_or_loops():
    with manager() as km:  # warm up: imports, the first kernel
        km.start_kernel(); km.client().execute('1', reply=True, timeout=30)
    threads, fds = len(threading.enumerate()), open_fds()
    for _ in range(3):
        with manager() as km:
            km.start_kernel()
            kcs = [km.client() for _ in range(3)]
            for kc in kcs: kc.execute('1', reply=True, timeout=30)
            loop = km._lt.loop
        assert loop.is_closed()
    time.sleep(0.5)
    assert len(threading.enumerate()) == threads and open_fds() <= fds+2

def test_calls_from_inside_a_callback_and_from_a_running_event_loop():
    with manager() as km:
        km.start_kernel()
        kc = km.client()
        errors = []
        def hook(msg):
            try: kc.complete('x', reply=True, timeout=5)
            except RuntimeError as e: errors.append(e)
        kc.execute_interactive('print(1)', output_hook=hook, timeout=30)
        assert errors and "own loop thread" in str(errors[0]) and 'kc.aclient' in str(errors[0])
        async def from_async(): return kc.execute('2+2', reply=True, timeout=10)  # blocks this loop, but its own loop runs
        assert asyncio.run(from_async())['content']['status'] == 'ok'
        msgs = list(kc.stream('print("streamed")', timeout=30))
        assert ''.join(m['content']['text'] for m in msgs if m['msg_type']=='stream') == 'streamed\n'
        with kc.subshells(2) as pool:
            t0 = time.monotonic()
            res = pool.map(['import time; time.sleep(1)']*2, timeout=30)
            assert all(r.status=='ok' for r in res) and time.monotonic()-t0 < 1.9

def test_interpreter_exit_with_an_open_client_does_not_hang(tmp_path):
    script = tmp_path/'leave_open.py'
    script.write_text('import threading\n'
                      'from jupyter_client.session import Session\n'
                      'from conkernelclient.blocking import ConBlockingKernelManager\n'
                      'km = ConBlockingKernelManager(session=Session(key=b"x")); km.start_kernel(); kc = km.client()\n'
                      'print(kc.execute("", user_expressions=dict(p="__import__(\'os\').getpid()"), reply=True, timeout=30)'
                      '["content"]["user_expressions"]["p"]["data"]["text/plain"], flush=True)\n'
                      'threading.Thread(target=kc.execute, args=("import time; time.sleep(60)",), kwargs=dict(reply=True), daemon=True).start()\n'
                      # a callback waiting for a user who never answers
                      'threading.Thread(target=kc.execute, args=("input()",), kwargs=dict(on_input=lambda p, pw: threading.Event().wait(), reply=True), daemon=True).start()\n'
                      'import time; time.sleep(0.5)\n')
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert time.monotonic()-t0 < 30
    pid = int(p.stdout.split()[0])
    for _ in range(50):  # the kernel it started is shut down at exit
        if not os.path.exists(f'/proc/{pid}') or open(f'/proc/{pid}/stat').read().split()[2]=='Z': break
        time.sleep(0.1)
    else: pytest.fail('the kernel outlived the interpreter that started it')

def test_blocking_client_attached_by_connection_file_owns_its_loop():
    with manager() as km:
        km.start_kernel()
        before = len(loop_threads())
        with ConBlockingKernelClient.from_connection_file(km.akm.connection_file) as kc:
            assert len(loop_threads()) == before+1
            assert kc.execute('print("attached")', outputs=True, timeout=30).outputs[0].text == 'attached\n'
        assert len(loop_threads()) == before and km.is_alive()  # its own loop is gone; the kernel is not its to stop

def test_blocking_client_of_a_remote_kernel(tmp_path):
    proc, url, token = jupyter_server(tmp_path)
    try:
        with ConBlockingKernelManager(RemoteKernelManager(url, token=token)) as km:
            km.start_kernel()
            kc = km.client()
            with ThreadPoolExecutor(8) as ex:
                res = list(ex.map(lambda i: kc.execute(f'print({i})', outputs=True, timeout=60).outputs[0].text, range(40)))
            assert res == [f'{i}\n' for i in range(40)]
    finally: stop(proc)

def test_ctrl_c_in_a_blocked_call_abandons_its_request(tmp_path):
    script = tmp_path/'ctrl_c.py'
    script.write_text('import os, signal, threading, time\n'
                      'from jupyter_client.session import Session\n'
                      'from conkernelclient.blocking import ConBlockingKernelManager\n'
                      # Python leaves SIGINT ignored if its parent ignored it (a background job): install what a terminal's Ctrl-C meets
                      'signal.signal(signal.SIGINT, signal.default_int_handler)\n'
                      'with ConBlockingKernelManager(session=Session(key=b"x")) as km:\n'
                      '    km.start_kernel(); kc = km.client()\n'
                      '    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()\n'
                      '    t0 = time.monotonic()\n'
                      '    try: kc.execute("import time; time.sleep(3)", reply=True, timeout=60)\n'
                      '    except KeyboardInterrupt: print("interrupted after", round(time.monotonic()-t0, 1))\n'
                      '    time.sleep(0.2)\n'
                      '    print("pending", len(kc.aclient._pending), len(kc.aclient._tracks))\n'
                      '    print("next", kc.execute("1+1", reply=True, timeout=30)["content"]["status"])\n')
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith('interrupted after') and float(lines[0].split()[-1]) < 2, p.stdout
    assert lines[1:] == ['pending 0 0', 'next ok'], p.stdout
