"""A docker credential helper for tests: `docker-credential-<name>`, written into a scratch
bin directory, speaking the get/store/erase/list protocol with a JSON file as its keychain
and logging every call (action and server, never the secret) to `calls.log`.

`fail` makes every call exit 1 with a message that echoes stdin (so a test can check that
pybuild blanks out the secret it sent).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

SCRIPT = '''#!{python}
import json, os, sys
here = {here!r}
action = sys.argv[1] if len(sys.argv) > 1 else ""
data = sys.stdin.read()
db_path = os.path.join(here, "keychain.json")
try:
    with open(db_path) as f:
        db = json.load(f)
except FileNotFoundError:
    db = {{}}
server = data.strip()
if action == "store":
    server = json.loads(data)["ServerURL"]
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(action + " " + (server if action != "list" else "") + "\\n")
if os.path.exists(os.path.join(here, "fail")):
    print("helper broke while handling: " + data)
    sys.exit(1)
if action == "store":
    entry = json.loads(data)
    db[entry["ServerURL"]] = {{"Username": entry["Username"], "Secret": entry["Secret"]}}
elif action == "get":
    if server not in db:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": server, **db[server]}}))
elif action == "erase":
    if server not in db:
        print("credentials not found in native keychain")
        sys.exit(1)
    del db[server]
elif action == "list":
    print(json.dumps({{k: v["Username"] for k, v in db.items()}}))
else:
    print("unknown action " + action)
    sys.exit(1)
with open(db_path, "w") as f:
    json.dump(db, f)
'''


@dataclass
class FakeHelper:
    name: str
    bin_dir: Path
    home: Path  # its keychain and log

    @property
    def calls(self) -> list[str]:
        try:
            return (self.home / "calls.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    @property
    def keychain(self) -> dict[str, dict[str, str]]:
        try:
            value = json.loads((self.home / "keychain.json").read_text())
        except FileNotFoundError:
            return {}
        assert isinstance(value, dict)
        return value

    def fail(self, on: bool = True) -> None:
        flag = self.home / "fail"
        if on:
            flag.write_text("1")
        else:
            flag.unlink(missing_ok=True)


def install_helper(bin_dir: Path, name: str) -> FakeHelper:
    home = bin_dir.parent / f"helper-{name}"
    home.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(SCRIPT.format(python=sys.executable, here=str(home)))
    script.chmod(0o755)
    return FakeHelper(name=name, bin_dir=bin_dir, home=home)
