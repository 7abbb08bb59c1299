"""Does papermill 2.7.0 give the same notebook with `kernel_manager_class=ConKernelManager` as with its default?

    .venv/bin/python tests/upstream/papermill_check.py [--timeout 120] [--dir /tmp/ckc_papermill]

Writes a tiny parameterised notebook (nbformat) into DIR, runs `papermill.execute_notebook` once per mode, each
in its own subprocess under `timeout`, and compares the executed code cells (source, execution_count, outputs
without metadata, papermill status). Exit 0 when both ran and match.
"""
import argparse, json, re, subprocess, sys, time
from pathlib import Path

def make_notebook(path:Path):
    "A notebook with a `parameters` cell and stdout, stderr, display, result and display-update outputs."
    import nbformat
    from nbformat.v4 import new_notebook, new_code_cell, new_markdown_cell
    nb = new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    params = new_code_cell('n = 3\nname = "world"')
    params.metadata['tags'] = ['parameters']
    nb.cells = [
        new_markdown_cell('# papermill check'), params,
        new_code_cell('print(f"hello {name}")\nsq = [i*i for i in range(n)]\nsq'),
        new_code_cell('import sys\nprint("to stderr", file=sys.stderr)\n'
                      'from IPython.display import display, HTML\ndisplay(HTML(f"<b>{n}</b>"))'),
        new_code_cell('for i in range(n): print(i, flush=True)'),
        new_code_cell('dh = display("first", display_id="d1")\ndisplay("second", display_id="d1", update=True)'),
        new_code_cell('sum(sq)'),
    ]
    nbformat.write(nb, str(path))

def execute(mode:str, src:str, dst:str):
    "Child process: execute `src` with papermill and print a JSON digest of the code cells."
    import papermill as pm
    kw = {}
    if mode == 'swapped':
        from conkernelclient import ConKernelManager
        kw['kernel_manager_class'] = ConKernelManager
    t = time.monotonic()
    nb = pm.execute_notebook(src, dst, parameters={'n': 5, 'name': 'papermill'}, kernel_name='python3',
                             progress_bar=False, execution_timeout=30, start_timeout=60, **kw)
    def norm(o):
        o = {k: v for k, v in o.items() if k not in ('metadata', 'transient', 'execution_count')}
        if 'data' in o: o['data'] = dict(o['data'])
        return o
    def merged(outs):
        "Adjacent stream outputs of one name joined: how the kernel split a print into messages depends on its flush timing, not the client."
        res = []
        for o in outs:
            if res and o['output_type']=='stream' and res[-1]['output_type']=='stream' and res[-1]['name']==o['name']:
                res[-1] = {**res[-1], 'text': res[-1]['text']+o['text']}
            else: res.append(o)
        return res
    cells = [{'source': c.source, 'execution_count': c.get('execution_count'),
              'outputs': merged([norm(o) for o in c.get('outputs', [])]),
              'papermill_status': c.metadata.get('papermill', {}).get('status')}
             for c in nb.cells if c.cell_type == 'code']
    print(json.dumps({'secs': round(time.monotonic()-t, 2), 'cells': cells}))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--timeout', type=float, default=120)
    ap.add_argument('--dir', default='/tmp/ckc_papermill')
    ap.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return execute(*a.child)
    d = Path(a.dir); d.mkdir(parents=True, exist_ok=True)
    src = d/'params.ipynb'
    make_notebook(src)
    res = {}
    for mode in ('default', 'swapped'):
        t = time.monotonic()
        p = subprocess.run(['timeout', '-k', '5', str(a.timeout), sys.executable, __file__, '--child', mode, str(src),
                            str(d/f'out_{mode}.ipynb')], capture_output=True, text=True)
        (d/f'{mode}.err').write_text(p.stderr)
        wall = time.monotonic()-t
        if p.returncode:
            lines = p.stderr.splitlines()
            errs = [l for l in lines if re.match(r'^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b', l)]
            why = errs[-1] if errs else 'killed by timeout' if p.returncode in (124, 137) else (lines or ['?'])[-1]
            print(f'{mode}: FAILED (exit {p.returncode}, {wall:.1f}s): {why.strip()}')
            print(f'         stderr in {d}/{mode}.err')
            continue
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f'{mode}: ran in {res[mode]["secs"]}s (process {wall:.1f}s), output {d}/out_{mode}.ipynb')
    if len(res) < 2: return 1
    a_, b_ = res['default']['cells'], res['swapped']['cells']
    if a_ == b_:
        print(f'MATCH: all {len(a_)} code cells have the same source, execution_count, outputs and status')
        return 0
    for i, (x, y) in enumerate(zip(a_, b_)):
        if x != y: print(f'DIFFER at code cell {i}:\n  default: {json.dumps(x)}\n  swapped: {json.dumps(y)}')
    if len(a_) != len(b_): print(f'DIFFER: {len(a_)} vs {len(b_)} code cells')
    return 1

if __name__ == '__main__':
    sys.exit(main())
