#!/usr/bin/env bash
# What sharing the default run costs (docs/remote.md, "Measured"): the default `dvc repro` in a fresh clone of
# this commit, `dvc push` to a folder remote, a second fresh clone's `dvc pull`, `dvc status` and `dvc repro`
# there (nothing must run), each timed; optionally the same push and pull over SSH.
#
#   bash benchmarks/remote.sh [WORKDIR]                       # default /tmp/remote-bench (about 1.5 GB)
#   SSH_URL=ssh://me@host:22/srv/bench SSH_KEY=~/.ssh/id_ed25519 bash benchmarks/remote.sh
#   CACHE=.dvc/cache bash benchmarks/remote.sh                  # a cache that already holds this commit's run
#
# The run takes about 7.5 minutes on 2 CPU cores; the transfers seconds. With CACHE (an absolute path or one
# relative to this repository) that already holds the committed run (dvc.lock's outputs), the first clone uses
# that DVC cache and `dvc checkout` restores the run instead of `dvc repro` (the tests run the script so, on the
# tiny pipeline they built).
set -euo pipefail
workdir=${1:-/tmp/remote-bench}
source=$(cd "$(dirname "$0")/.." && pwd)
export DVC_NO_ANALYTICS=1 TQDM_MININTERVAL=5
load() { cut -d' ' -f1-3 /proc/loadavg; }
timed() { local label=$1; shift; /usr/bin/time -f "$label: %e s" "$@"; }

rm -rf "$workdir" && mkdir -p "$workdir"
git clone -q "$source" "$workdir/run" && cd "$workdir/run"
git config user.email bench@example.com && git config user.name bench
echo "load before the run: $(load)"
if [ -n "${CACHE:-}" ]; then
    dvc cache dir --local "$(cd "$source" && realpath "$CACHE")"
    timed "dvc checkout (the run from CACHE)" dvc checkout
    dvc status | grep -q "up to date" || { dvc status; echo "error: CACHE does not hold this commit's run" >&2; exit 1; }
else
    timed "dvc repro" dvc repro >"$workdir/repro.log" 2>&1 || { tail -20 "$workdir/repro.log"; exit 1; }
fi
echo "load after the run: $(load)"
du -sh --apparent-size data/features.h5 data models reports
git add -A && git commit -qm "the default run" --allow-empty
dvc remote add -d folder "$workdir/remote" && git add .dvc/config && git commit -qm "folder remote"
timed "dvc push (folder)" dvc push
echo "remote: $(find "$workdir/remote" -type f | wc -l) files, $(du -sh --apparent-size "$workdir/remote" | cut -f1)"

git clone -q "$workdir/run" "$workdir/clone" && cd "$workdir/clone"
timed "dvc pull (folder)" dvc pull
timed "dvc status" dvc status
timed "dvc repro (nothing to run)" dvc repro | tail -1
cmp models/model.pt "$workdir/run/models/model.pt" && cmp data/features.h5 "$workdir/run/data/features.h5"
echo "model and features identical"

if [ -n "${SSH_URL:-}" ]; then
    cd "$workdir/run" && dvc remote add ssh "$SSH_URL" && dvc remote modify --local ssh keyfile "$SSH_KEY"
    timed "dvc push (ssh)" dvc push -r ssh
    git add .dvc/config && git commit -qm "ssh remote"
    git clone -q "$workdir/run" "$workdir/clone-ssh" && cd "$workdir/clone-ssh"
    dvc remote modify --local ssh keyfile "$SSH_KEY"
    timed "dvc pull (ssh)" dvc pull -r ssh
fi
echo "load at the end: $(load)"
