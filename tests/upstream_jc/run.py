"""Run jupyter_client's own async tests on its classes (baseline) and on conkernelclient's (CKC_SWAP=1), and compare.

    timeout 1800 .venv/bin/python tests/upstream_jc/run.py                # both modes, the main selection
    timeout 1800 .venv/bin/python tests/upstream_jc/run.py --mode swap    # swapped only
    timeout 1800 .venv/bin/python tests/upstream_jc/run.py --extended     # plus other tests that use async managers
    timeout 1800 .venv/bin/python tests/upstream_jc/run.py -- -x -k lifecycle   # after `--`: extra pytest args

Prints, per mode, the counts and wall time, then every test that passes on the baseline but not swapped, with the
first line of its error. Logs and JUnit XML go to --out (default: a fresh temporary folder).
"""
import argparse, os, re, subprocess, sys, tempfile, time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fetch import fetch_sdist

# jupyter_client's tests of its async client and managers
MAIN = ['tests/test_client.py::TestAsyncKernelClient',
        'tests/test_kernelmanager.py::TestAsyncKernelManager',
        'tests/test_kernelmanager.py::TestKernelManagerShutDownGracefully::test_async_signal_kernel_subprocesses',
        'tests/test_restarter.py::test_async_restart_check',
        'tests/test_restarter.py::test_async_restarter_gives_up']
# other tests that reach AsyncKernelManager / AsyncIOLoopKernelManager, which the plugin swaps as well
EXTENDED = ['tests/test_manager.py', 'tests/test_provisioning.py', 'tests/test_multikernelmanager.py::TestAsyncKernelManager']

def pytest_cmd(select:list, junit:Path, extra:list=()) -> list:
    "The pytest command line, run from the sdist's root (so jupyter_client's own pytest config applies)."
    return [sys.executable, '-m', 'pytest', '-p', 'swap_classes', '-p', 'no:cacheprovider',
            '-p', 'no:asyncio',  # pytest-asyncio, if installed, fights jupyter_client's `filterwarnings = error`; its tests don't use it
            '--timeout', '120', '--color=no', f'--junitxml={junit}', *extra, *select]

def run_mode(swap:bool, sdist:Path, select:list, out:Path, extra:list=(), timeout:float=1500):
    "Run pytest in one mode; returns (returncode, wall seconds, log path, junit path)."
    name = 'swap' if swap else 'base'
    junit, log = out/f'{name}.xml', out/f'{name}.log'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(HERE), *filter(None, [os.environ.get('PYTHONPATH')])])}
    if swap: env['CKC_SWAP'] = '1'
    else: env.pop('CKC_SWAP', None)
    t0 = time.monotonic()
    with open(log, 'w') as f:
        try: rc = subprocess.run(pytest_cmd(select, junit, extra), cwd=sdist, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired: rc = 'timeout'
    return rc, time.monotonic()-t0, log, junit

def norm(nodeid:str) -> str:
    "A node id that is the same in both modes (the async_km fixture's param id is the manager class's name)."
    return re.sub(r'\bConKernelManager\b', 'AsyncKernelManager', nodeid)

def results(junit:Path) -> dict:
    "{normalized node id: (status, first line of the error)}, the worst of its phases."
    rank = dict(passed=0, skipped=1, failed=2, error=3)
    res = {}
    if not junit.exists(): return res
    for tc in ET.parse(junit).iter('testcase'):
        # classname is "tests.test_x" or "tests.test_x.TestClass"
        parts = tc.get('classname', '').split('.')
        split = next((i for i, p in enumerate(parts) if p.startswith('test_')), len(parts)-1)
        nodeid = '/'.join(parts[:split+1]) + '.py' + ''.join('::'+p for p in parts[split+1:]) + '::' + tc.get('name')
        status, msg = 'passed', ''
        for kind in ('skipped', 'failure', 'error'):
            el = tc.find(kind)
            if el is not None:
                status = {'failure': 'failed'}.get(kind, kind)
                msg = (el.get('message') or el.text or '').strip().splitlines()[0:1]
                msg = msg[0][:300] if msg else ''
        key = norm(nodeid)
        if key not in res: res[key] = (status, msg)
        elif rank[status] > rank[res[key][0]]:  # a later phase failing too: keep the earlier phase's (first) error message
            res[key] = (status, res[key][1] if rank[res[key][0]] >= 2 else msg)
    return res

def summary(res:dict) -> str:
    counts = {}
    for status, _ in res.values(): counts[status] = counts.get(status, 0)+1
    return ', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'no results'

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--mode', choices=['both', 'base', 'swap'], default='both')
    ap.add_argument('--extended', action='store_true', help='also run the other tests that use async managers')
    ap.add_argument('--select', nargs='+', help='node ids to run instead of the default selection (relative to the sdist root)')
    ap.add_argument('--out', type=Path, help='folder for logs and JUnit XML (default: a new temporary folder)')
    ap.add_argument('--timeout', type=float, default=1500, help='seconds for each mode as a whole')
    ap.add_argument('pytest_args', nargs='*', help='after `--`: extra pytest arguments')
    a = ap.parse_args(argv)
    sdist = fetch_sdist()
    select = a.select or MAIN + (EXTENDED if a.extended else [])
    out = a.out or Path(tempfile.mkdtemp(prefix='upstream_jc_'))
    out.mkdir(parents=True, exist_ok=True)
    print(f'sdist: {sdist}\nlogs:  {out}')
    modes = [False, True] if a.mode == 'both' else [a.mode == 'swap']
    res = {}
    for swap in modes:
        rc, wall, log, junit = run_mode(swap, sdist, select, out, a.pytest_args, a.timeout)
        res[swap] = results(junit)
        print(f"{'swap' if swap else 'base'}: {summary(res[swap])}  (exit {rc}, wall {wall:.1f} s, log {log})")
    if len(modes) == 2:
        worse = {k: v for k, v in res[True].items() if v[0] in ('failed', 'error') and res[False].get(k, ('',))[0] == 'passed'}
        print(f'{len(worse)} passing on the baseline but not swapped' + (':' if worse else ''))
        for k, (status, msg) in sorted(worse.items()): print(f'  {status.upper()} {k}\n      {msg}')
        ok = not worse
    else: ok = all(s in ('passed', 'skipped') for s, _ in res[modes[0]].values()) and bool(res[modes[0]])
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
