"""The best-known callers of AsyncKernelManager/AsyncKernelClient, unchanged, on ours: nbclient's and jupyter_client's own test
suites (their sdists fetched with pip at test time, never copied here, our classes swapped in by a pytest plugin), and papermill.
Only the swapped runs happen here; `tests/upstream/run_nbclient.sh baseline` and `tests/upstream_jc/run.py` compare with the
baseline (both pass in full on it too)."""
import os, re, subprocess, sys
from pathlib import Path
import pytest

root = Path(__file__).parent.parent
pytestmark = pytest.mark.timeout(900)

def run(*cmd, timeout=840, **env):
    "Run `cmd` in the repo root with `env` added, printing the end of its output."
    p = subprocess.run([str(c) for c in cmd], cwd=root, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})
    print(p.stdout[-3000:], p.stderr[-3000:], sep='\n')
    return p

def test_nbclients_own_suite_passes_on_con_kernel_manager(tmp_path):
    p = run('bash', 'tests/upstream/run_nbclient.sh', 'swapped', OUT=str(tmp_path), TIMEOUT='60')  # a hung test costs TIMEOUT: keep the run readable within the limit
    assert p.returncode == 0, (tmp_path/'swapped.log').read_text()[-5000:]
    passed = int(re.search(r'(\d+) passed', p.stdout).group(1))
    used = int(re.search(r'(\d+) tests built a NotebookClient on the swapped default', p.stdout).group(1))
    assert passed == 127 and 'failed' not in p.stdout.split('swap_manager')[-1]
    assert used >= 40  # the swap took: every test that runs a real kernel through nbclient's default manager used ours

def test_jupyter_clients_own_async_tests_pass_on_our_classes(tmp_path):
    p = run(sys.executable, 'tests/upstream_jc/run.py', '--mode', 'swap', '--out', tmp_path)
    assert p.returncode == 0
    assert re.search(r'swap: 30 passed', p.stdout), p.stdout

def test_papermill_gives_the_same_notebook_on_con_kernel_manager(tmp_path):
    p = run(sys.executable, 'tests/upstream/papermill_check.py', '--dir', tmp_path, '--timeout', '120', timeout=300)
    assert p.returncode == 0 and 'MATCH' in p.stdout
