"""Fetch and unpack an upstream sdist (e.g. nbclient) into a local cache, via pip only.

    python tests/upstream/fetch.py nbclient 0.11.0    # prints the unpacked path
"""
import subprocess, sys, tarfile, zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parents[2]/'.cache'/'upstream'
PINS = {'nbclient': '0.11.0', 'papermill': '2.7.0'}

def _archive(name:str, version:str, dest:Path):
    "The cached sdist archive for `name==version` in `dest`, or None."
    stems = {f'{name}-{version}', f'{name.replace("-","_")}-{version}'}
    for p in sorted(dest.iterdir()):
        for ext in ('.tar.gz', '.zip'):
            if p.name.endswith(ext) and p.name[:-len(ext)].lower() in {s.lower() for s in stems}: return p

def sdist(name:str, version:str, dest=CACHE, timeout:float=300) -> Path:
    "Download (once) the sdist of `name==version` into `dest`, unpack it there, and return the unpacked dir."
    dest = Path(dest); dest.mkdir(parents=True, exist_ok=True)
    arc = _archive(name, version, dest)
    if arc is None:
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-binary', ':all:', '--no-deps',
                        '--disable-pip-version-check', f'{name}=={version}', '-d', str(dest)],
                       check=True, timeout=timeout)
        arc = _archive(name, version, dest)
        if arc is None: raise FileNotFoundError(f'pip downloaded no sdist for {name}=={version} into {dest}')
    out = dest/(arc.name[:-len('.tar.gz')] if arc.name.endswith('.tar.gz') else arc.stem)
    if not out.is_dir():
        tmp = dest/(out.name+'.partial')
        if arc.name.endswith('.zip'):
            with zipfile.ZipFile(arc) as z: z.extractall(tmp)
        else:
            with tarfile.open(arc) as t: t.extractall(tmp, filter='data')
        inner = tmp/out.name
        (inner if inner.is_dir() else tmp).rename(out)
        if tmp.exists(): tmp.rmdir()
    return out

if __name__ == '__main__':
    name = sys.argv[1] if len(sys.argv)>1 else 'nbclient'
    print(sdist(name, sys.argv[2] if len(sys.argv)>2 else PINS[name]))
