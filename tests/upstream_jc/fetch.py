"""Fetch (once) and unpack jupyter_client's sdist, whose `tests/` we run against conkernelclient's classes.

Usage: `python tests/upstream_jc/fetch.py` prints the unpacked path (downloading only if it is not cached yet).
Nothing from the sdist is copied into the repo: it lives in `.cache/upstream/` (git-ignored). The sdist's own
`jupyter_client/` package is not unpacked, so the installed jupyter_client is the one imported everywhere.
"""
import subprocess, sys, tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repo root
CACHE = ROOT/'.cache'/'upstream'

def installed_version(dist:str='jupyter_client') -> str:
    "The version of `dist` installed in this interpreter: the one whose tests we want."
    from importlib.metadata import version
    return version(dist)

def fetch_sdist(version:str|None=None, dest:Path=CACHE, dist:str='jupyter_client', timeout:float=300) -> Path:
    "Download `dist`'s sdist (default: the installed version) into `dest` unless cached, unpack it, return the unpacked dir."
    version = version or installed_version(dist)
    dest = Path(dest); dest.mkdir(parents=True, exist_ok=True)
    out = dest/f'{dist}-{version}'
    if (out/'tests').is_dir(): return out
    tgz = dest/f'{dist}-{version}.tar.gz'
    if not tgz.exists():
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-binary', ':all:', '--no-deps',
                        f'{dist}=={version}', '-d', str(dest)], check=True, timeout=timeout)
    with tarfile.open(tgz) as tf:
        names = tf.getnames()
        if not any(n.startswith(f'{out.name}/tests/') for n in names): raise RuntimeError(f'{tgz} has no tests/ folder')
        # leave out the package's own source: with the sdist root on sys.path (the tests need `tests.*` importable, in
        # pytest and in the kernels it spawns) it would shadow the installed jupyter_client we mean to test against
        skip = f'{out.name}/jupyter_client'
        tf.extractall(dest, members=[m for m in tf.getmembers() if m.name!=skip and not m.name.startswith(skip+'/')], filter='data')
    return out

if __name__ == '__main__': print(fetch_sdist(*sys.argv[1:2]))
