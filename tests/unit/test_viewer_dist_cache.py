"""The OHIF dist cache: fetched once, also when two runs (or a test's clone) start together."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from local_cloud.viewer import ensure_dist

# A stand-in for `npm pack <pkg> --pack-destination DIR`: counts its calls, takes a moment
# (the window in which a second run used to find the dist half renamed), writes the tarball.
FAKE_NPM = """#!/bin/sh
echo call >> "{calls}"
sleep 0.5
cd "$4" && mkdir -p package/dist && echo '<html></html>' > package/dist/index.html \\
  && tar czf ohif-app.tgz package && rm -r package
"""


def test_two_runs_starting_together_fetch_once_and_both_get_the_dist(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    npm = tmp_path / "npm"
    npm.write_text(FAKE_NPM.format(calls=calls))
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    cache = tmp_path / "cache"
    results: list[Path | BaseException] = []

    def run() -> None:
        try:
            results.append(ensure_dist(cache, "9.9.9", npm=str(npm)))
        except BaseException as exc:  # the failure under test: OSError "Directory not empty"
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [cache / "9.9.9" / "dist"] * 2
    assert (cache / "9.9.9" / "dist" / "index.html").is_file()
    assert calls.read_text().count("call") == 1
