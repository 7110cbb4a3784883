"""The stage probe: `python probe.py LOG REAL_PYTHON args...` runs `REAL_PYTHON args...` and appends one JSON
line to LOG (and to LOG.all): the stage's wall time, CPU time, exit status and peak memory.

The rehearsal puts a `python` shim first on PATH (project.write_shim) that runs every stage through this
file, so the memory measured is the stage's, not dvc's: the peak RSS that wait4 reports (the largest of
the stage and the children it waited for) and the sum over the stage's process tree, METEOR's Java
included, sampled every 0.5 s. Standard library only (psutil if present), so it adds milliseconds to a stage.
"""

import json
import os
import sys
import time


def main() -> None:
    log_path, real_python, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.execv(real_python, [real_python, *arguments])
    tree_peak = 0  # the stage's processes together (e.g. train and its METEOR Java)
    try:
        import psutil

        stage = psutil.Process(pid)
    except Exception:  # noqa: BLE001 - without psutil (or the process already gone) the column stays empty
        stage = None
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if stage is not None:
            try:
                tree = [stage, *stage.children(recursive=True)]
                tree_peak = max(tree_peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except Exception:  # noqa: BLE001 - a process that ends between listing and reading it
                pass
        time.sleep(0.5)
    record = {
        "argv": arguments,
        "seconds": time.perf_counter() - start,
        "max_rss_kb": usage.ru_maxrss,  # the largest of the stage process and the children it waited for
        "tree_rss_kb": tree_peak // 1024,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "status": os.waitstatus_to_exitcode(status),
    }
    for path in (log_path, log_path + ".all"):
        with open(path, "a") as log_file:
            log_file.write(json.dumps(record) + "\n")
    sys.exit(max(0, record["status"]) if record["status"] >= 0 else 128 - record["status"])


if __name__ == "__main__":
    main()
