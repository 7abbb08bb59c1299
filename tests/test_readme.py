"The README tells the truth: its Python examples run against a real kernel, match nbs/index.ipynb, and its commands match CI."
import ast, json, re, types
from pathlib import Path
import pytest
from conftest import run

root = Path(__file__).parent.parent
readme = (root/'README.md').read_text()
blocks = re.findall(r'```python\n(.*?)\n```', readme, flags=re.S)
shell = re.findall(r'```sh\n(.*?)\n```', readme, flags=re.S)

def test_readme_python_matches_index_notebook():
    cells = [''.join(c['source']) for c in json.loads((root/'nbs/index.ipynb').read_text())['cells'] if c['cell_type']=='code']
    assert blocks and blocks == [c for c in cells if not c.startswith('#| hide')]

def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    assert len(shell) == 2
    install, tests = shell
    assert 'pip install' in install and install.endswith('.venv/bin/conkernelclient')
    assert tests in (root/'.ci/run').read_text()

@pytest.mark.timeout(120)
def test_readme_examples_run(capsys):
    async def main():
        ns = {}
        for src in blocks:
            code = compile(src, 'README.md', 'exec', flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            res = eval(code, ns)
            if isinstance(res, types.CoroutineType): await res
    run(main())
    out = capsys.readouterr().out
    assert 'ok ok' in out and 'a 0\na 1\na 2\nb 0\nb 1\nb 2' in out and 'hello Ada' in out and 'did not complete within 0.1 s: it was still running' in out
    tool = re.search(r"\{'finished': False, 'started': True, 'output': '([\d\\n]*)'\}", out)
    assert tool and tool.group(1).split('\\n')[:5] == ['0', '1', '2', '3', '4'], out  # what the loop printed in its second
    assert "{'finished': True, 'status': 'ok', 'output': 'the next call runs at once\\n'}" in out
    assert re.search(r"True running True\n\['0', '1', '2'\] 1\.\d\nTrue\n", out) and "['agent 0 done\\n', 'agent 1 done\\n']" in out
    assert 'hello from the command line' in out and '42' in out
    assert "['0\\n', '1\\n', '2\\n', '3\\n']" in out
    assert 'hello from nbclient\n 1024' in out
    assert '100 hello from the server' in out
    assert "echoed {'ping': 1} b'raw bytes'" in out
    assert 'slider 7 7' in out
    assert '{"warm": true}\npooled nbclient' in out
    assert str([str(i**2) for i in range(16)]) in out
