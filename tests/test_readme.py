"""The README stays true: its opening commands and its library example."""
import os
import re

from tests.helpers import REPO

README = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()


def test_library_example_runs(capsys):
  section = README.split('## Use it from your own code', 1)[1]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  exec(compile(code, 'README.md', 'exec'), {})
  out = capsys.readouterr().out
  assert 'loss ' in out and '(1, 20)' in out


def test_opening_commands_match_ci():
  first = re.search(r'```bash\n(.*?)```', README, re.S).group(1)
  commands = [l for l in first.splitlines() if l and not l.startswith('#')]
  assert commands[0] == ('pip install -e . && python -m train --config configs/default.py '
                         '--workdir runs/default')
  ci = open(os.path.join(REPO, '.ci', 'run'), encoding='utf-8').read()
  assert commands[1] in ci  # CI runs the README's test command verbatim
